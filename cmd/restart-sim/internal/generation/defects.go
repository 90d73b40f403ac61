//go:build linux

package generation

// Defects: bugs the demo service can be built with (Config.Defect), one at
// a time, so that restart-sim's own tests can check that the verdict
// catches each of them and names the load it breaks. Every defect acts
// only in generations that took the set over from a predecessor, so that
// the first generation serves a clean baseline; "retiring" ones act in a
// generation that has handed its set over and is draining.
const (
	// DefectHTTPWrong: every 16th request of the http load is answered
	// with another request's id.
	DefectHTTPWrong = "http-wrong"
	// DefectHTTPNoAnswer: every 16th request of the http load is read and
	// its connection closed without an answer.
	DefectHTTPNoAnswer = "http-no-answer"
	// DefectKeepAliveStatus: every 16th request of the keepalive load is
	// answered 503.
	DefectKeepAliveStatus = "keepalive-status"
	// DefectKeepAliveAbort: a retiring generation closes a reused
	// keep-alive connection, without an answer, once it has read a request
	// on it. net/http retries such a GET silently on a new connection.
	DefectKeepAliveAbort = "keepalive-abort"
	// DefectStreamDrop: the first frame read on each stream taken over is
	// never answered.
	DefectStreamDrop = "stream-drop"
	// DefectStreamRepeat: the first frame read on each stream taken over is
	// answered twice.
	DefectStreamRepeat = "stream-repeat"
	// DefectStreamState: a stream taken over forgets how many frames were
	// answered on it.
	DefectStreamState = "stream-state"
	// DefectStreamRebind: the stream listener received is closed and a new
	// one is bound on a fresh port (so the first generation's port dies with
	// the generation that handed it over).
	DefectStreamRebind = "stream-rebind"
	// DefectStreamNotTaken: the first stream connection received is closed
	// instead of served.
	DefectStreamNotTaken = "stream-not-taken"
	// DefectUDPDrop: every 16th datagram read is not answered.
	DefectUDPDrop = "udp-drop"
	// DefectUDPTwice: every 16th datagram read is answered twice.
	DefectUDPTwice = "udp-twice"
	// DefectUDPNotTaken: the UDP socket received is closed and a new one is
	// bound on a fresh port.
	DefectUDPNotTaken = "udp-not-taken"
	// DefectLinesSkip: the first line writer skips a number on taking over.
	DefectLinesSkip = "lines-skip"
	// DefectLinesDouble: a retiring generation writes one more line with
	// the number it has handed over.
	DefectLinesDouble = "lines-double"
	// DefectLinesTorn: a retiring generation writes the first half of a
	// line and never its end.
	DefectLinesTorn = "lines-torn"
	// DefectLeak: every generation hands its successor one more descriptor
	// than it received (/dev/null), and nobody closes them: descriptors
	// pile up across generations.
	DefectLeak = "leak"
)

// Defects lists the defects.
var Defects = []string{
	DefectHTTPWrong, DefectHTTPNoAnswer, DefectKeepAliveStatus, DefectKeepAliveAbort,
	DefectStreamDrop, DefectStreamRepeat, DefectStreamState, DefectStreamRebind, DefectStreamNotTaken,
	DefectUDPDrop, DefectUDPTwice, DefectUDPNotTaken,
	DefectLinesSkip, DefectLinesDouble, DefectLinesTorn, DefectLeak,
}

// defectEvery is how often the defects that hit one request in many do.
const defectEvery = 16

// has reports whether this generation has defect d.
func (c Config) has(d string) bool { return c.Defect == d && c.took }

// nth counts calls and reports true on every defectEvery-th one.
func nth(n int64) bool { return n%defectEvery == defectEvery-1 }
