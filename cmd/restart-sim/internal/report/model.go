package report

// SchemaID names the version of the JSON layout written by [Report]. It
// changes when a field changes meaning or disappears; new fields may be added
// without changing it.
const SchemaID = "graceful.restart-sim/v1"

// Report is everything one simulation measured. It is written as JSON by
// --json (see REPORT.md beside the command for the schema) and rendered for a
// terminal by [Report.WriteText].
type Report struct {
	Schema      string         `json:"schema"`
	Verdict     Verdict        `json:"verdict"`
	Config      Config         `json:"config"`
	Phases      Phases         `json:"phases"`
	Restarts    Restarts       `json:"restarts"`
	Loads       []Load         `json:"loads"`
	Latency     LatencyCompare `json:"latency"`
	Generations []Generation   `json:"generations"`
	Fds         Fds            `json:"fds"`
	Supervisor  Supervisor     `json:"supervisor"`
}

// Supervisor describes the process that ran the generations.
type Supervisor struct {
	// PID is the supervisor's process id: 1 when it ran as a container's
	// init.
	PID int `json:"pid"`
	// GenerationsReaped counts the generations whose exit status the
	// supervisor collected; every one started must be.
	GenerationsReaped int `json:"generations_reaped"`
	// OrphansReaped counts processes the supervisor reaped without having
	// started them (orphans handed to it as PID 1 or child subreaper).
	OrphansReaped int `json:"orphans_reaped"`
}

// Verdict is the one-line answer: did anything go wrong? Latency is
// judged apart: a missed latency target fails the run only when
// Config.FailOnLatency is set.
type Verdict struct {
	Pass        bool           `json:"pass"`
	Interrupted bool           `json:"interrupted"`
	Problems    []string       `json:"problems"`
	Latency     LatencyVerdict `json:"latency"`
}

// LatencyVerdict says whether p99 latency during the restarts stayed within
// Target times the baseline's p99, for every load that has samples in both
// phases.
type LatencyVerdict struct {
	Target float64 `json:"target"`
	Met    bool    `json:"met"`
	// Missed names the loads over the target, in report order.
	Missed []string `json:"missed"`
}

// Config echoes the settings the run used.
type Config struct {
	Restarts         int      `json:"restarts"`
	IntervalMs       float64  `json:"interval_ms"`
	BaselineMs       float64  `json:"baseline_ms"`
	Concurrency      int      `json:"concurrency"`
	RatePerClient    float64  `json:"rate_per_client"`
	RequestTimeoutMs float64  `json:"request_timeout_ms"`
	ReadyTimeoutMs   float64  `json:"ready_timeout_ms"`
	Loads            []string `json:"loads"`
	Faults           []string `json:"faults"`
	// LatencyTarget is the largest ratio of p99 during restarts to p99 in
	// the baseline that meets the latency target.
	LatencyTarget float64 `json:"latency_target"`
	// FailOnLatency: a missed latency target fails the run.
	FailOnLatency bool `json:"fail_on_latency"`
	// Defect names the bug the demo service was built with, to check that
	// the verdict catches it; "" for none.
	Defect string `json:"defect"`
	// Command is the service under test, run under the supervisor; empty
	// for the built-in demo service.
	Command []string `json:"command"`
	// CrashSafety: the supervisor kept the descriptors the service stored
	// with it, and handed them to the generation it started after a crash.
	CrashSafety bool `json:"crash_safety"`
	// Spare: the supervisor kept the next generation started in advance,
	// and a crash was recovered by it.
	Spare bool `json:"spare,omitempty"`
}

// Phases gives the boundaries of the run, in seconds since it started.
type Phases struct {
	BaselineStartS float64 `json:"baseline_start_s"`
	BaselineEndS   float64 `json:"baseline_end_s"`
	RestartStartS  float64 `json:"restart_start_s"`
	RestartEndS    float64 `json:"restart_end_s"`
	EndS           float64 `json:"end_s"`
}

// Restarts summarises the restart attempts.
type Restarts struct {
	Requested      int `json:"requested"`
	Attempted      int `json:"attempted"`
	Done           int `json:"done"`
	Failed         int `json:"failed"`
	FaultsInjected int `json:"faults_injected"`
	RolledBack     int `json:"rolled_back"`
	// Crashes counts the serving generations killed by an injected crash
	// fault, Recovered those after which a new generation served.
	Crashes    int       `json:"crashes"`
	Recovered  int       `json:"recovered"`
	HandoffMs  Summary   `json:"handoff_ms"`
	DrainMs    Summary   `json:"drain_ms"`
	RecoveryMs Summary   `json:"recovery_ms"`
	Attempts   []Attempt `json:"attempts"`
}

// Attempt is one try at replacing the current generation.
type Attempt struct {
	Index int     `json:"index"`
	Gen   int     `json:"gen"`
	From  int     `json:"from"`
	Fault string  `json:"fault"`
	AtS   float64 `json:"at_s"`
	// OK: the new generation took over and the old one drained and exited.
	OK bool `json:"ok"`
	// RolledBack: the new generation was removed and the old one kept serving.
	RolledBack bool `json:"rolled_back"`
	// HandoffMs: from starting the new process to its READY reaching the supervisor.
	HandoffMs float64 `json:"handoff_ms"`
	// SessionMs: the graceful session inside the new process, dial to READY sent.
	SessionMs float64 `json:"session_ms"`
	// DrainMs: from READY to the old process's exit.
	DrainMs float64 `json:"drain_ms"`
	// RecoveryMs: for a crash fault, from the death of the serving
	// generation to the next one serving.
	RecoveryMs float64 `json:"recovery_ms"`
	Error      string  `json:"error"`
}

// Load is what one load generator saw.
type Load struct {
	Name       string           `json:"name"`
	Sent       int64            `json:"sent"`
	OK         int64            `json:"ok"`
	Failed     int64            `json:"failed"`
	FailedBy   map[string]int64 `json:"failed_by"`
	Lost       int64            `json:"lost"`
	Duplicated int64            `json:"duplicated"`
	Retried    int64            `json:"retried"`
	Latency    LatencyCompare   `json:"latency"`
	// DuringCrashes is the part of the failures, losses and retries above
	// that happened while a serving generation killed by a crash fault was
	// dead (from the fault to the next generation serving). Only refused
	// connections among them fail the run, and only with crash safety on.
	DuringCrashes Trouble `json:"during_crashes"`
}

// Trouble counts what went wrong in part of a run.
type Trouble struct {
	Failed   int64            `json:"failed"`
	FailedBy map[string]int64 `json:"failed_by"`
	Lost     int64            `json:"lost"`
	Retried  int64            `json:"retried"`
}

// LatencyCompare sets latency without restarts (the baseline phase) beside
// latency during the restart phase. A ratio is restarts / baseline, 0 when
// either side has no samples.
type LatencyCompare struct {
	Baseline Summary `json:"baseline"`
	Restarts Summary `json:"restarts"`
	RatioP50 float64 `json:"ratio_p50"`
	RatioP99 float64 `json:"ratio_p99"`
	RatioMax float64 `json:"ratio_max"`
}

// Summary describes a set of durations in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// Generation is one process of the demo service.
type Generation struct {
	Gen   int    `json:"gen"`
	PID   int    `json:"pid"`
	Fault string `json:"fault"`
	// Outcome: "retired" (handed over and drained), "final" (stopped at the
	// end of the run), "rolled-back" (removed after a failed hand-off),
	// "crashed" (killed while serving by a crash fault) or "failed" (ended
	// in a way nobody asked for).
	Outcome string `json:"outcome"`
	Exit    string `json:"exit"`
	// Served counts the answers the load generators got from this generation.
	Served map[string]int64 `json:"served"`
	// FdsAfterHandoff: open descriptors once the set was received (or created,
	// for the first generation) and before serving; -1 when not reported.
	FdsAfterHandoff int `json:"fds_after_handoff"`
	// FdsAtExit: open descriptors after draining, just before exiting; -1
	// when not reported.
	FdsAtExit int `json:"fds_at_exit"`
	// Serves is where the generation said, once ready, that it serves: an
	// address per listener or socket ("http", "stream", "udp"). A
	// generation that took them over serves where the first one did.
	Serves map[string]string `json:"serves"`
}

// Fds is the descriptor accounting that must stay flat across generations.
type Fds struct {
	SupervisorStart int   `json:"supervisor_start"`
	SupervisorEnd   int   `json:"supervisor_end"`
	AfterHandoff    Range `json:"after_handoff"`
	AtExit          Range `json:"at_exit"`
	Flat            bool  `json:"flat"`
}

// Range is the smallest and largest of a set of counts; both -1 when empty.
type Range struct {
	Min int `json:"min"`
	Max int `json:"max"`
}
