package fdpass

// AppendFds exposes the control-data parser to the tests, so that they can
// give it buffers no kernel would produce.
var AppendFds = appendFds
