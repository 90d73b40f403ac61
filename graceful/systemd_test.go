//go:build linux

package graceful_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// A service manager's notify socket, as systemd makes it: a datagram
// socket with SO_PASSCRED. systemd itself does not run here; these specs
// speak its protocol on real sockets.
type manager struct {
	conn *net.UnixConn
}

func newManager(addr string) *manager {
	GinkgoHelper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	rc, err := conn.SyscallConn()
	Expect(err).NotTo(HaveOccurred())
	Expect(rc.Control(func(fd uintptr) {
		Expect(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)).To(Succeed())
	})).To(Succeed())
	setenv("NOTIFY_SOCKET", addr)
	return &manager{conn: conn}
}

// datagram is what the manager read: text, sender's pid, descriptors.
type datagram struct {
	text string
	pid  int
	fds  []int
}

func (m *manager) read() datagram {
	GinkgoHelper()
	buf := make([]byte, 4096)
	oob := make([]byte, 1024)
	Expect(m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
	n, oobn, flags, _, err := m.conn.ReadMsgUnix(buf, oob)
	Expect(err).NotTo(HaveOccurred())
	Expect(flags & unix.MSG_CTRUNC).To(BeZero())
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	Expect(err).NotTo(HaveOccurred())
	d := datagram{text: string(buf[:n])}
	for _, c := range msgs {
		if cred, err := unix.ParseUnixCredentials(&c); err == nil {
			d.pid = int(cred.Pid)
		} else if fds, err := unix.ParseUnixRights(&c); err == nil {
			d.fds = append(d.fds, fds...)
		}
	}
	return d
}

// setenv sets an environment variable for the spec.
func setenv(name, value string) {
	old, had := os.LookupEnv(name)
	os.Setenv(name, value)
	DeferCleanup(func() {
		if had {
			os.Setenv(name, old)
		} else {
			os.Unsetenv(name)
		}
	})
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	Expect(unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)).To(Succeed())
	return ts.Nano() / 1000
}

var _ = Describe("sd_notify", func() {
	It("sends the states in one datagram, with the sender's credentials", func() {
		m := newManager(socketAddr())
		sent, err := graceful.SdNotify(graceful.NotifyReady, graceful.NotifyStatus("serving 2 listeners"), graceful.NotifyMainPID(4242), graceful.NotifyStopping)
		Expect(err).NotTo(HaveOccurred())
		Expect(sent).To(BeTrue())
		d := m.read()
		Expect(d.text).To(Equal("READY=1\nSTATUS=serving 2 listeners\nMAINPID=4242\nSTOPPING=1"))
		Expect(d.pid).To(Equal(os.Getpid()))
		Expect(os.Getenv("NOTIFY_SOCKET")).NotTo(BeEmpty(), "a successor needs it")
	})

	It("says RELOADING=1 with the time of the announcement on CLOCK_MONOTONIC", func() {
		m := newManager(socketAddr())
		before := monotonicUsec()
		_, err := graceful.SdNotify(graceful.NotifyReloading())
		Expect(err).NotTo(HaveOccurred())
		after := monotonicUsec()
		text := m.read().text
		usec, ok := strings.CutPrefix(text, "RELOADING=1\nMONOTONIC_USEC=")
		Expect(ok).To(BeTrue(), "%q", text)
		n, err := strconv.ParseInt(usec, 10, 64)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(BeNumerically(">=", before))
		Expect(n).To(BeNumerically("<=", after))
	})

	It("reports false, and no error, without NOTIFY_SOCKET", func() {
		setenv("NOTIFY_SOCKET", "")
		os.Unsetenv("NOTIFY_SOCKET")
		for _, send := range []func() (bool, error){
			func() (bool, error) { return graceful.SdNotify(graceful.NotifyReady) },
			func() (bool, error) { return graceful.SdNotifyWithFds([]int{0}, "FDSTORE=1") },
			func() (bool, error) { return graceful.SdStore("x", os.Stdin) },
		} {
			sent, err := send()
			Expect(err).NotTo(HaveOccurred())
			Expect(sent).To(BeFalse())
		}
	})

	It("reaches an abstract address (@name)", func() {
		m := newManager(fmt.Sprintf("@graceful-test-%d-%d", os.Getpid(), GinkgoParallelProcess()))
		_, err := graceful.SdNotify(graceful.NotifyReady)
		Expect(err).NotTo(HaveOccurred())
		Expect(m.read().text).To(Equal("READY=1"))
	})

	It("stores real descriptors: FDSTORE=1 and FDNAME= with SCM_RIGHTS, the caller's left as they were", func() {
		m := newManager(socketAddr())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		r, w, err := os.Pipe()
		Expect(err).NotTo(HaveOccurred())
		defer r.Close()
		defer w.Close()
		lnFd := rawFd(ln.(*net.TCPListener))
		flagsBefore, err := unix.FcntlInt(uintptr(lnFd), unix.F_GETFL, 0)
		Expect(err).NotTo(HaveOccurred())

		sent, err := graceful.SdStore("http", ln.(*net.TCPListener), w)
		Expect(err).NotTo(HaveOccurred())
		Expect(sent).To(BeTrue())
		d := m.read()
		defer func() {
			for _, fd := range d.fds {
				unix.Close(fd)
			}
		}()
		Expect(d.text).To(Equal("FDSTORE=1\nFDNAME=http"))
		Expect(d.fds).To(HaveLen(2))
		Expect(sameFile(d.fds[0], lnFd)).To(BeTrue(), "the first descriptor is not the listener")
		Expect(sameFile(d.fds[1], int(w.Fd()))).To(BeTrue(), "the second descriptor is not the pipe")
		flagsAfter, err := unix.FcntlInt(uintptr(lnFd), unix.F_GETFL, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(flagsAfter).To(Equal(flagsBefore), "the listener's flags changed")

		By("the manager's copy of the listener accepts what clients dial")
		c, err := net.Dial("tcp", ln.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		nfd, _, err := unix.Accept(d.fds[0])
		Expect(err).NotTo(HaveOccurred())
		unix.Close(nfd)

		By("removing them by name")
		_, err = graceful.SdStoreRemove("http")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.read().text).To(Equal("FDSTOREREMOVE=1\nFDNAME=http"))
	})

	It("reports a manager that is not there: descriptors cannot reach it", func() {
		setenv("NOTIFY_SOCKET", socketAddr()) // nothing bound at it
		sent, err := graceful.SdNotifyWithFds(nil, "FDSTORE=1")
		Expect(err).To(MatchError(unix.ENOENT))
		Expect(err).To(MatchError(ContainSubstring("sendmsg")))
		Expect(sent).To(BeFalse())
		sent, err = graceful.SdStore("x", os.Stdin)
		Expect(err).To(HaveOccurred())
		Expect(sent).To(BeFalse())
	})

	It("takes any name of 1 to 255 printable ASCII characters but ':', from space to '~'", func() {
		setenv("NOTIFY_SOCKET", "")
		os.Unsetenv("NOTIFY_SOCKET") // the name is checked all the same
		for _, name := range []string{"x", " ", "~", "a b~c", strings.Repeat("x", 255)} {
			sent, err := graceful.SdStore(name, os.Stdin)
			Expect(err).NotTo(HaveOccurred(), "name %q", name)
			Expect(sent).To(BeFalse())
			_, err = graceful.SdStoreRemove(name)
			Expect(err).NotTo(HaveOccurred(), "name %q", name)
		}
		for _, name := range []string{"\x1f", "\x7f", "caf\xc3\xa9"} {
			_, err := graceful.SdStoreRemove(name)
			Expect(err).To(HaveOccurred(), "name %q", name)
		}
	})

	It("refuses a descriptor name that LISTEN_FDNAMES could not carry", func() {
		newManager(socketAddr())
		for _, name := range []string{"", "a:b", "new\nline", strings.Repeat("x", 256)} {
			_, err := graceful.SdStore(name, os.Stdin)
			Expect(err).To(HaveOccurred(), "name %q", name)
			_, err = graceful.SdStoreRemove(name)
			Expect(err).To(HaveOccurred(), "name %q", name)
		}
	})
})

var _ = Describe("socket activation", func() {
	It("takes nothing meant for another process, and unsets the variables", func() {
		setenv("LISTEN_FDS", "1")
		setenv("LISTEN_PID", "1")
		setenv("LISTEN_FDNAMES", "http")
		err := graceful.ReceiveActivation(func(fd int, _ io.Reader) error {
			defer GinkgoRecover()
			Fail(fmt.Sprintf("called with fd %d", fd))
			return nil
		})
		Expect(err).To(MatchError(graceful.ErrNotActivated))
		for _, name := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
			_, set := os.LookupEnv(name)
			Expect(set).To(BeFalse(), "%s is still set", name)
		}
	})

	It("hands descriptors from systemd-socket-activate to the callback by name, close-on-exec, and unsets the variables", func() {
		activate, err := exec.LookPath("systemd-socket-activate")
		if err != nil {
			Skip("systemd-socket-activate is not installed")
		}
		exe, err := os.Executable()
		Expect(err).NotTo(HaveOccurred())
		dir := GinkgoT().TempDir()
		a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
		cmd := exec.Command(activate, "-l", a, "-l", b, "--fdname=http:admin",
			"-E", activationChildEnv+"=1", exe, "-test.run=^TestActivationChild$")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })

		By("connecting, which launches the program; it answers on the listener it got")
		var c net.Conn
		Eventually(func() error { c, err = net.Dial("unix", a); return err }).WithTimeout(10 * time.Second).Should(Succeed())
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		Expect(err).NotTo(HaveOccurred())
		var got activationReport
		Expect(json.Unmarshal([]byte(line), &got)).To(Succeed(), "%q", line)
		Eventually(session).WithTimeout(10 * time.Second).Should(gexec.Exit(0))

		Expect(got.Err).To(BeEmpty())
		Expect(got.Names).To(Equal([]string{"http", "admin"}))
		Expect(got.Cloexec).To(Equal([]bool{true, true}))
		Expect(got.Env).To(BeEmpty(), "variables left set")
		Expect(got.Again).To(ContainSubstring(graceful.ErrNotActivated.Error()))
	})
})

// activationChildEnv makes TestActivationChild do its work: it is the
// program systemd-socket-activate launches.
const activationChildEnv = "GRACEFUL_TEST_ACTIVATION_CHILD"

type activationReport struct {
	Names   []string `json:"names"`
	Cloexec []bool   `json:"cloexec"`
	Env     []string `json:"env"`   // LISTEN_* left in the environment
	Err     string   `json:"err"`   // from ReceiveActivation
	Again   string   `json:"again"` // from a second call
}

// TestActivationChild is not a test: run by systemd-socket-activate, it
// takes the activation's descriptors, accepts one connection on the first
// and writes there what it found.
func TestActivationChild(t *testing.T) {
	if os.Getenv(activationChildEnv) == "" {
		t.Skip("the program socket activation runs in a spec")
	}
	var rep activationReport
	var first net.Listener
	err := graceful.ReceiveActivation(func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil {
			return err
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			return err
		}
		rep.Names = append(rep.Names, m["name"])
		rep.Cloexec = append(rep.Cloexec, flags&unix.FD_CLOEXEC != 0)
		if first == nil {
			first, err = graceful.FdListener(fd)
			return err
		}
		return unix.Close(fd)
	})
	if err != nil {
		rep.Err = err.Error()
	}
	for _, name := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(name); ok {
			rep.Env = append(rep.Env, name+"="+v)
		}
	}
	rep.Again = fmt.Sprint(graceful.ReceiveActivation(func(fd int, _ io.Reader) error { return unix.Close(fd) }))
	if first == nil {
		t.Fatalf("no listener: %+v", rep)
	}
	c, err := first.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep)
	c.Write(append(b, '\n'))
	c.Close()
	first.Close()
}

func sameFile(a, b int) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(a, &sa) == nil && unix.Fstat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
