// Package mutants lists the deliberately broken implementations the
// conformance suite must fail (adapters/mutants runs them): each is one
// plausible fault that breaks one requirement, and the suite's self-test
// checks that a run against it fails that very requirement.
package mutants

import "sort"

// Mutant is one fault.
type Mutant struct {
	// Name selects it: mutants --mutant NAME.
	Name string
	// ID is the requirement it breaks; "" for the control (none) and for
	// a broken adapter that must fail every check (exit-early).
	ID string
	// What the fault does.
	What string
}

// Table is every mutant, by requirement.
var Table = []Mutant{
	{"none", "", "no fault: the control, which must pass every check"},
	{"exit-early", "", "the adapter exits with status 0 without answering done: every check must fail"},

	{"single-read", "TRN-1", "assumes one recvmsg returns one whole frame"},
	{"single-payload-read", "TRN-2", "reads a frame's payload with one read"},
	{"late-fds", "TRN-3", "sender attaches descriptors to the last byte of their BATCH"},
	{"fds-on-second-byte", "TRN-3", "sender attaches descriptors to the second byte of their BATCH"},
	{"no-cloexec", "TRN-4", "receiver receives descriptors without close-on-exec"},
	{"ignore-ctrunc", "TRN-5", "receiver ignores MSG_CTRUNC"},
	{"ctrunc-malformed", "TRN-5", "receiver reports MSG_CTRUNC as MALFORMED, not TRUNCATED"},
	{"ctrunc-keep", "TRN-5", "receiver leaves open the descriptors of a truncated message"},
	{"one-cmsg", "TRN-6", "receiver parses only the first control message"},
	{"pidfd-leak", "TRN-6", "receiver does not close the pidfd of SCM_PIDFD"},
	{"ctrl-253-only", "TRN-7", "receiver's control buffer holds 253 descriptors and nothing else"},
	{"ctrl-small", "TRN-7", "receiver's control buffer holds 64 descriptors"},
	{"hang", "TRN-8", "no deadline at all"},
	{"per-read", "TRN-8", "bounds each read, not each frame: a peer that trickles bytes holds it"},
	{"timeout-error", "TRN-8", "sends ERROR MALFORMED when a deadline passes"},
	{"no-write-deadline", "TRN-8", "writes without a deadline"},
	{"per-write-deadline", "TRN-8", "bounds each write call, not each frame"},
	{"no-connect-deadline", "TRN-8", "receiver connects without a deadline"},
	{"no-idle-deadline", "TRN-8", "sender waits for a next HELLO without a deadline"},
	{"idle-is-failure", "TRN-8", "sender reports a connection closed idle after READY as a failure"},
	{"sender-no-hello-deadline", "TRN-8", "sender waits for HELLO without a deadline"},
	{"blocking", "TRN-9", "sender puts the descriptors it sends in blocking mode"},
	{"nonblock-set", "TRN-9", "sender puts the descriptors it sends in non-blocking mode"},
	{"shutdown-sent", "TRN-9", "sender shuts down the reading side of the descriptors it sends"},
	{"wrong-fd", "TRN-10", "sender sends /dev/null in place of the first descriptor"},
	{"close-first", "TRN-10", "sender closes the first descriptor before sending it"},

	{"little-endian", "FRM-1", "sender writes every integer little-endian"},
	{"welcome-le", "FRM-1", "sender writes WELCOME's version little-endian"},
	{"hello-le", "FRM-1", "receiver writes HELLO's versions little-endian"},
	{"ignore-flags", "FRM-2", "accepts frames with non-zero flags"},
	{"sender-flags", "FRM-2", "sender writes WELCOME with flags 1"},
	{"skip-unknown", "FRM-3", "skips frames of unknown type"},
	{"ignore-nfds", "FRM-3", "accepts a non-zero nfds on frames that carry no descriptors"},
	{"receiver-batch-before-welcome", "FRM-3", "receiver accepts BATCH and END before WELCOME"},
	{"receiver-second-welcome-ok", "FRM-3", "receiver accepts a second WELCOME"},
	{"skip-unexpected", "FRM-3", "passes over frames of a known type that may not come at that point"},
	{"length-limit-off", "FRM-4", "accepts frames up to 4 MiB"},
	{"toolarge-as-malformed", "FRM-4", "answers an over-long frame MALFORMED, not TOO_LARGE"},
	{"length-before-nfds", "FRM-4", "checks length before nfds"},
	{"length-before-type", "FRM-4", "checks length before type"},
	{"length-lax", "FRM-4", "accepts HELLO, WELCOME, END, ACK, READY of any length"},
	{"refuse-exact-1mib", "FRM-4", "refuses a payload of exactly 1 MiB"},
	{"batch-length-lax", "FRM-4", "does not check a BATCH's length against 6 bytes per record"},
	{"length-before-flags", "FRM-4", "checks length before flags"},
	{"sender-eof-hello-continue", "FRM-5", "sender takes a HELLO cut by end of stream for a whole one"},
	{"eof-as-end", "FRM-5", "receiver takes end of stream for the END of the set"},
	{"payload-first", "FRM-6", "reads a frame's payload before judging its header"},

	{"hello-wrong-range", "NEG-1", "receiver's HELLO offers versions 2..2"},
	{"no-hello-second-session", "NEG-1", "receiver begins a second session on a connection without HELLO"},
	{"ignore-magic", "NEG-2", "sender accepts any magic"},
	{"version-lax", "NEG-3", "sender welcomes any version range"},
	{"min-gt-max-ok", "NEG-3", "sender welcomes a range whose min is over its max"},
	{"unsupported-as-malformed", "NEG-3", "sender answers an unsupported range MALFORMED"},
	{"reject-wide-range", "NEG-3", "sender refuses a range that goes beyond 1"},
	{"reject-min-zero", "NEG-3", "sender refuses a range that starts at 0"},
	{"welcome-two", "NEG-3", "sender always answers WELCOME 2"},
	{"trust-welcome", "NEG-4", "receiver accepts any version in WELCOME"},
	{"welcome-v0-ok", "NEG-4", "receiver accepts WELCOME 0"},
	{"welcome-highest", "NEG-5", "sender answers with the receiver's highest version"},
	{"welcome-wide", "NEG-5", "sender writes WELCOME's version as 4 bytes"},
	{"hello-wide", "NEG-5", "receiver writes HELLO's versions as 4 bytes each"},
	{"busy-first", "NEG-6", "sender answers BUSY before it checks the HELLO"},
	{"magic-after-version", "NEG-6", "sender checks the versions before the magic"},
	{"busy-before-header", "NEG-6", "sender answers BUSY before it reads the frame"},
	{"judge-before-auth", "NEG-6", "sender judges the HELLO before the credentials"},

	{"end-count-off", "SND-1", "sender's END counts one descriptor more"},
	{"reorder-send", "SND-2", "sender sends the set in reverse order"},
	{"reopen", "SND-2", "sender sends the files reopened, not the descriptors it was given"},
	{"sorted-fds", "SND-2", "sender sends the set sorted by descriptor number"},
	{"dup-first", "SND-2", "sender sends the first descriptor in place of the second"},
	{"meta-swap", "SND-2", "sender swaps the metadata of the first two descriptors"},
	{"batch-253", "SND-3", "sender puts up to 253 descriptors in one BATCH"},
	{"batch-504", "SND-3", "sender puts up to 504 descriptors in one BATCH"},
	{"truncate-meta", "SND-5", "sender cuts metadata over 64 KiB instead of refusing it"},
	{"meta-limit-off", "SND-5", "sender refuses metadata of exactly 64 KiB"},
	{"payload-limit-plus", "SND-6", "sender fills BATCH frames up to 1 MiB + 7"},
	{"kind-lie", "SND-7", "sender describes every descriptor as FILE"},
	{"end-anyway", "SND-8", "sender skips a descriptor it cannot send and sends END"},
	{"no-error-on-fail", "SND-8", "sender closes without ERROR SENDER_FAILED when a descriptor cannot be sent"},
	{"keep-pushed", "SND-9", "sender keeps descriptors a receiver pushes at it"},
	{"hold-pushed", "SND-9", "sender holds descriptors a receiver pushes at it until the connection ends"},

	{"reorder", "RCV-1", "receiver pairs descriptors with the records in reverse order"},
	{"sort-by-inode", "RCV-1", "receiver hands descriptors over sorted by inode"},
	{"stack-queue", "RCV-1", "receiver takes a BATCH's descriptors from the end of the queue"},
	{"dedup", "RCV-1", "receiver hands the same descriptor over only once"},
	{"liar", "RCV-1", "receiver closes what it got and reports other descriptors"},
	{"accept-nfds-0", "RCV-2", "receiver accepts a BATCH of 0 descriptors"},
	{"accept-253-nfds", "RCV-2", "receiver accepts a BATCH of 253 descriptors"},
	{"meta-over-ok", "RCV-2", "receiver accepts metadata over 64 KiB"},
	{"refuse-meta-65536", "RCV-2", "receiver refuses metadata of exactly 64 KiB"},
	{"hasmeta-lax", "RCV-2", "receiver accepts metadata without HAS_META"},
	{"unknown-kind-ok", "RCV-2", "receiver accepts unknown kinds"},
	{"rflags-lax", "RCV-2", "receiver accepts unknown rflags bits"},
	{"trailing-ok", "RCV-2", "receiver accepts bytes after the last record"},
	{"refuse-252", "RCV-2", "receiver refuses a BATCH of 252 descriptors"},
	{"missing-fds-ok", "RCV-2", "receiver makes up the descriptors a BATCH lacks"},
	{"queue-unbounded", "RCV-3", "receiver never limits its descriptor queue"},
	{"queue-limit-251", "RCV-3", "receiver refuses 252 queued descriptors"},
	{"end-count-lax", "RCV-4", "receiver ignores END's count"},
	{"end-count-le", "RCV-4", "receiver accepts an END count below the descriptors sent"},
	{"end-count-gt", "RCV-4", "receiver accepts an END count above the descriptors sent"},
	{"leftover-ok", "RCV-4", "receiver accepts descriptors left in the queue at END"},
	{"early-handover", "RCV-5", "receiver hands the set over after the first BATCH"},
	{"limit-partial-delivery", "RCV-5", "receiver hands over what came of a set over its limits"},
	{"leak-on-error", "RCV-6", "receiver keeps the descriptors of a failed session open"},
	{"leak-socket", "RCV-6", "receiver keeps a copy of its connection open after a failure"},
	{"leak-refused-rest", "RCV-6", "receiver keeps open the descriptors after a refused one"},
	{"leak-on-success", "RCV-6", "receiver keeps a copy of its connection after a session"},
	{"drop-meta", "RCV-7", "receiver reports every descriptor without metadata"},
	{"empty-as-none", "RCV-7", "receiver reports empty metadata as none"},
	{"no-kind-check", "RCV-8", "receiver does not check the kinds"},
	{"error-as-success", "RCV-9", "receiver hands over what arrived before an ERROR"},
	{"error-code-lost", "RCV-9", "receiver reports an ERROR from the sender as OTHER"},

	{"ack-count-off", "ACK-1", "receiver's ACK counts one descriptor more"},
	{"reject-as-ack", "ACK-1", "receiver acknowledges a set its user refused"},
	{"reject-wrong-code", "ACK-1", "receiver answers its user's refusal MALFORMED"},
	{"no-ack-check", "ACK-2", "sender counts a session as done without a matching ACK"},
	{"ack-count-lax", "ACK-2", "sender accepts an ACK of any count"},
	{"ack-fewer-ok", "ACK-2", "sender accepts an ACK counting fewer descriptors"},
	{"ack-wrong-no-error", "ACK-2", "sender closes without ERROR MALFORMED on a wrong ACK count"},
	{"unknown-code-ok", "ERR-3", "sender takes an ERROR of unknown code for an ACK"},
	{"unconfirmed-as-failure", "ACK-3", "receiver reports a set it handed over as PEER_CLOSED when ACK cannot be written"},
	{"no-ready", "RDY-1", "receiver never says READY"},
	{"ready-on-ack", "RDY-2", "sender reports ready as soon as ACK arrives"},
	{"ready-any-frame-ok", "RDY-2", "sender takes any frame where READY is awaited for READY"},
	{"ready-eof-failure", "RDY-2", "sender reports a close after ACK as a failure"},
	{"ready-frame-answer", "RDY-2", "sender answers an ERROR where READY is awaited, and reports a failure"},
	{"no-ready-deadline", "RDY-3", "sender waits for READY without a deadline"},
	{"busy-sticky", "RDY-4", "sender stays busy after a failed session"},
	{"ready-deadline-long", "RDY-4", "sender waits a minute for READY, whatever it was asked"},
	{"second-hello-malformed", "RDY-5", "sender answers a second HELLO on a connection MALFORMED"},
	{"second-session-cumulative", "RDY-5", "sender's END in a second session counts both sessions"},

	{"kv-unsorted", "META-1", "key-value metadata encoded with keys in reverse order"},
	{"kv-decode-latin1", "META-1", "key-value decoder reads text as Latin-1"},
	{"kv-dup-ok", "META-2", "key-value decoder accepts a repeated key"},
	{"kv-empty-ok", "META-2", "key-value decoder accepts zero bytes as no pairs"},
	{"kv-lax-count", "META-2", "key-value decoder accepts a pair count over the pairs present"},
	{"kv-lax-utf8-value", "META-2", "key-value decoder accepts a value that is not UTF-8"},
	{"kv-trailing-ok", "META-2", "key-value decoder accepts bytes after the last pair"},

	{"no-session-deadline", "LIM-1", "no deadline on a whole session"},
	{"no-set-limits", "LIM-2", "receiver has no limit on a set"},
	{"limit-off-by-one", "LIM-2", "receiver refuses a set exactly at its limits"},
	{"limit-wrong-code", "LIM-2", "receiver answers a set over its limits MALFORMED"},
	{"meta-limit-ignored", "LIM-2", "receiver does not limit a set's metadata"},
	{"limit-after-payload", "LIM-2", "receiver judges the limits only once a BATCH's payload is read"},
	{"unbounded-pending", "LIM-3", "sender keeps every pending connection"},
	{"thread-per-conn", "LIM-4", "sender spends an OS thread on each connection"},

	{"no-error-frame", "ERR-1", "never sends ERROR"},
	{"resync", "ERR-1", "receiver skips bytes until a frame makes sense"},
	{"crash-on-garbage", "ERR-2", "exits on a frame of unknown type"},
	{"crash-on-failure", "ERR-2", "receiver exits when a session fails"},
	{"leak-conn", "ERR-2", "sender keeps a copy of every refused connection"},
	{"sender-leak-on-success", "ERR-2", "sender keeps a copy of every connection that ended well"},
	{"answer-error", "ERR-3", "answers an ERROR with an ERROR"},
	{"strict-error-text", "ERR-3", "answers an ERROR whose message is not UTF-8 with MALFORMED"},
	{"skip-odd-errors", "ERR-3", "receiver passes over an ERROR of unknown code, broken layout or non-ASCII text"},

	{"any-uid", "AUTH-1", "sender hands its set to a peer of any uid"},
	{"auth-welcome-first", "AUTH-1", "sender writes WELCOME before refusing a peer"},
	{"auth-malformed-code", "AUTH-1", "sender refuses a peer with MALFORMED"},
	{"policy-ignored", "AUTH-2", "sender ignores its user's policy"},
	{"chmod-after-bind", "AUTH-3", "sender binds its socket with the umask's mode, then chmods it"},
	{"umask-open", "AUTH-3", "sender's socket is mode 0777"},
	{"no-busy", "AUTH-4", "sender runs sessions at the same time"},
	{"busy-until-ack", "AUTH-4", "sender's busy window ends at ACK"},
	{"receiver-trusts", "AUTH-5", "receiver does not check the sender"},
	{"receiver-check-after-hello", "AUTH-5", "receiver checks the sender after writing HELLO"},
	{"auth-after-hello", "AUTH-6", "sender waits for HELLO before checking the peer"},
	{"dial-no-check", "AUTH-6", "sender does not check the receiver it dials"},
	{"overflow-ok", "AUTH-7", "the overflow uid passes a policy that names it"},
	{"abstract-no-check", "AUTH-8", "no credential check on an abstract address"},
	{"abstract-refuse-all", "AUTH-8", "refuses every peer on an abstract address"},
	{"hup-before-data", "AUTH-9", "receiver reports a hung-up connection before reading the ERROR queued on it"},
	{"no-busy-retry", "AUTH-10", "receiver does not try again after BUSY"},
	{"replace-anything", "AUTH-11", "sender replaces whatever is at its socket path"},
	{"refuse-stale", "AUTH-11", "sender refuses to replace a stale socket"},
}

// ByName returns the mutant called name.
func ByName(name string) (Mutant, bool) {
	for _, m := range Table {
		if m.Name == name {
			return m, true
		}
	}
	return Mutant{}, false
}

// Names returns every mutant's name, sorted.
func Names() []string {
	out := make([]string, 0, len(Table))
	for _, m := range Table {
		out = append(out, m.Name)
	}
	sort.Strings(out)
	return out
}
