"""Protocol drivers, one package each; each publishes an ``IDriverPlugin`` under the
``gridgate.drivers`` entry point and imports only the gateway core (never another driver)."""
