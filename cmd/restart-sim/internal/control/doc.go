// Package control carries the reports a generation of the restart-sim demo
// service sends restart-sim: one JSON [Message] per datagram on a unix
// datagram socket in restart-sim's private directory ([Listen], [Dial]),
// each naming the generation by its process id. restart-sim sends nothing
// back: the supervisor (package supervisor) starts, signals and stops the
// generations.
package control
