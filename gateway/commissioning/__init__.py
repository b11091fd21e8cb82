"""Commissioning tools run against a gateway, never imported by it: the grid-dispatch
connectivity test (``gridgate dispatch-test``), point-table export/import and checks, and the
demo site. They may block and run their own threads; the gateway process must not."""
