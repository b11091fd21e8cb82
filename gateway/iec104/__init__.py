"""What both IEC 60870-5-104 sides share (outstation, dispatch test, a future 104 master driver):
type identifiers and their rules, CP56Time2a on the wire, and a frame decoder that shares no code
with the 104 libraries. No runtime: nothing here opens a socket."""
