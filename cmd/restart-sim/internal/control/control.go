package control

// Message types, in the order a generation sends them.
const (
	// Receiving: the hand-off session has begun and the first descriptor is
	// in (sent only in the "kill" fault mode, so the supervisor can kill
	// the process mid-handoff).
	Receiving = "receiving"
	// Received: the whole set is in and acknowledged; Fds counts the open
	// descriptors at that point, before serving, less the established
	// stream connections received (their number varies from one hand-off
	// to the next).
	Received = "received"
	// Ready: serving, READY sent to the old generation; the addresses are set.
	Ready = "ready"
	// Handoff: this generation handed its set to a successor (OK) or the
	// attempt failed and it goes on serving (OK false, Err says why).
	Handoff = "handoff"
	// Exit: drained, about to exit; Fds counts the open descriptors, Served
	// what this generation answered.
	Exit = "exit"
)

// Message is one line on the control channel.
type Message struct {
	Type string `json:"type"`
	Gen  int    `json:"gen"`

	HTTPAddr   string `json:"http_addr,omitempty"`
	StreamAddr string `json:"stream_addr,omitempty"`
	UDPAddr    string `json:"udp_addr,omitempty"`

	Fds       int              `json:"fds,omitempty"`
	SessionMs float64          `json:"session_ms,omitempty"`
	OK        bool             `json:"ok,omitempty"`
	Err       string           `json:"err,omitempty"`
	Served    map[string]int64 `json:"served,omitempty"`
	// LinesNext is, for each line writer, the number of the next line it
	// would write: the count of lines written so far by all generations.
	LinesNext []uint64 `json:"lines_next,omitempty"`
}
