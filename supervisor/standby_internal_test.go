//go:build linux

package supervisor

import (
	"net"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

var _ = Describe("placing the standby hand-off socket", func() {
	var dir, at, path string
	BeforeEach(func() {
		dir = GinkgoT().TempDir()
		at, path = filepath.Join(dir, "standby.sock"), filepath.Join(dir, "handoff.sock")
	})
	// standby binds the standby socket and returns it.
	standby := func() *net.UnixListener {
		GinkgoHelper()
		ln, err := bindStandby(at)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		fi, err := os.Lstat(at)
		Expect(err).NotTo(HaveOccurred())
		Expect(fi.Mode().Type()).To(Equal(os.ModeSocket))
		Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))
		return ln
	}
	// reaches reports whether a connection to path reaches ln.
	reaches := func(path string, ln *net.UnixListener) bool {
		GinkgoHelper()
		c, err := net.Dial("unix", path)
		if err != nil {
			return false
		}
		defer c.Close()
		got, err := ln.Accept()
		Expect(err).NotTo(HaveOccurred())
		got.Close()
		return true
	}

	It("moves to a free path", func() {
		ln := standby()
		Expect(placeStandby(at, path)).To(Succeed())
		Expect(reaches(path, ln)).To(BeTrue())
		Expect(at).NotTo(BeAnExistingFile())
	})

	It("replaces a stale socket, the dead generation's", func() {
		stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		Expect(err).NotTo(HaveOccurred())
		stale.SetUnlinkOnClose(false)
		stale.Close()
		ln := standby()
		Expect(placeStandby(at, path)).To(Succeed())
		Expect(reaches(path, ln)).To(BeTrue())
		Expect(at).NotTo(BeAnExistingFile(), "the stale socket was not removed")
	})

	It("leaves a live socket alone, and stays where it was", func() {
		live, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		Expect(err).NotTo(HaveOccurred())
		defer live.Close()
		ln := standby()
		Expect(placeStandby(at, path)).To(MatchError(ContainSubstring("holds something other than a stale socket")))
		Expect(reaches(path, live)).To(BeTrue())
		Expect(reaches(at, ln)).To(BeTrue())
	})

	It("leaves a regular file alone, its content whole", func() {
		Expect(os.WriteFile(path, []byte("keep me"), 0o600)).To(Succeed())
		standby()
		Expect(placeStandby(at, path)).To(HaveOccurred())
		Expect(os.ReadFile(path)).To(Equal([]byte("keep me")))
		fi, err := os.Lstat(at)
		Expect(err).NotTo(HaveOccurred())
		Expect(fi.Mode().Type()).To(Equal(os.ModeSocket))
	})

	It("says when a rename cannot reach the path (another file system), so that the supervisor stops making standbys", func() {
		other, err := os.MkdirTemp("/dev/shm", "gfs")
		if err != nil {
			Skip("no tmpfs at /dev/shm: " + err.Error())
		}
		DeferCleanup(os.RemoveAll, other)
		var a, b unix.Statfs_t
		Expect(unix.Statfs(dir, &a)).To(Succeed())
		Expect(unix.Statfs(other, &b)).To(Succeed())
		if a.Fsid == b.Fsid {
			Skip("the temporary directory is on /dev/shm's file system")
		}
		standby()
		Expect(placeStandby(at, filepath.Join(other, "handoff.sock"))).To(MatchError(unix.EXDEV))
		Expect(at).To(BeAnExistingFile())
	})
})
