// Package load holds the built-in load generators of restart-sim: HTTP
// requests on new connections and on keep-alive connections, long-lived TCP
// streams that must survive every hand-off without reconnecting, and UDP
// request/response; plus the checker of the lines the demo service appends
// to the shared file.
//
// Every generator talks to loopback addresses only, numbers everything it
// sends, and is bounded in count (Config.MaxPerClient) and in time (its
// context): it stops by itself.
package load
