// Cross checks: `trellis lock` and the Go api's Lock and Semaphore contend
// for the same prefix, so both must use Consul's key layout, flags and
// holder JSON (api/lock.go, api/semaphore.go).

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// lockRun is one `trellis lock` process whose command appends its pid to
// a file of its own and then sleeps.
type lockRun struct {
	cmd    *exec.Cmd
	marker string
	done   chan error
	exited bool
}

var (
	runsMu sync.Mutex
	runs   []*lockRun
)

// startTrellisLock runs `trellis lock [-n N] PREFIX` with a command that
// marks `marker` when it starts.
func startTrellisLock(bin, addr, prefix string, n int, marker string) (*lockRun, error) {
	args := []string{"lock", "-http-addr", addr}
	if n > 1 {
		args = append(args, "-n", strconv.Itoa(n))
	}
	args = append(args, "-shell=false", prefix, "/bin/sh", "-c", `echo $$ >>"$0"; exec sleep 120`, marker)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &lockRun{cmd: cmd, marker: marker, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	runsMu.Lock()
	runs = append(runs, r)
	runsMu.Unlock()
	return r, nil
}

// running reports whether the command has started (its marker exists).
func (r *lockRun) running() bool {
	_, err := os.Stat(r.marker)
	return err == nil
}

// waitRunning waits up to d for the command to start.
func (r *lockRun) waitRunning(d time.Duration) (bool, time.Duration) {
	t0 := time.Now()
	for !r.running() {
		if time.Since(t0) > d {
			return false, d
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true, time.Since(t0)
}

// stop sends SIGTERM (trellis lock stops its command and releases) and
// waits up to 10s for the process to exit.
func (r *lockRun) stop() bool {
	if r.exited {
		return true
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		r.exited = true
		return true
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		return false
	}
}

// killAllRuns ends every trellis lock and its command still running.
func killAllRuns() {
	runsMu.Lock()
	defer runsMu.Unlock()
	for _, r := range runs {
		_ = r.cmd.Process.Kill()
		if b, err := os.ReadFile(r.marker); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}

// sessionIDs is the set of live sessions' IDs.
func sessionIDs(c *api.Client) map[string]bool {
	ss, _, _ := c.Session().List(nil)
	ids := map[string]bool{}
	for _, s := range ss {
		ids[s.ID] = true
	}
	return ids
}

// newSession reports whether a session not in before exists.
func newSession(c *api.Client, before map[string]bool) bool {
	for id := range sessionIDs(c) {
		if !before[id] {
			return true
		}
	}
	return false
}

// waitFor polls cond every 50ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// testCrossLock: `trellis lock PREFIX` and api.Lock on PREFIX/.lock exclude
// each other in both orders.
func testCrossLock(addr, bin, dir string) {
	const prefix = "interop/go/cross"
	c := newClient(addr)
	tl, err := startTrellisLock(bin, addr, prefix, 1, filepath.Join(dir, "cross-1"))
	if !noErr("cross lock: start trellis lock", err) {
		return
	}
	if r, d := tl.waitRunning(10 * time.Second); !ok(fmt.Sprintf("cross lock: trellis lock runs its command (%s)", secs(d)), r, "not within 10s") {
		return
	}
	p, err := holderOf(c, prefix+"/.lock")
	if noErr("cross lock: read PREFIX/.lock", err) {
		ok("cross lock: trellis lock holds PREFIX/.lock with the api's Lock flags",
			p.Flags == api.LockFlagValue && p.Session != "", "flags=%#x session=%q", p.Flags, p.Session)
	}
	l, err := c.LockOpts(&api.LockOptions{Key: prefix + "/.lock", SessionTTL: "10s", LockDelay: lockDelay})
	if !noErr("cross lock: LockOpts", err) {
		return
	}
	got := make(chan outcome, 1)
	go func() {
		lost, err := l.Lock(nil)
		got <- outcome{lost: lost, err: err, at: time.Now()}
	}()
	// api.Lock refuses at once (ErrLockConflict) if the flags differ;
	// otherwise it waits.
	select {
	case o := <-got:
		ok("cross lock: api.Lock waits while trellis lock holds", false, "Lock returned: err=%v", o.err)
		return
	case <-time.After(time.Second):
		ok("cross lock: api.Lock waits while trellis lock holds", true, "")
	}
	t0 := time.Now()
	ok("cross lock: trellis lock exits on SIGTERM", tl.stop(), "still running after 10s")
	select {
	case o := <-got:
		ok(fmt.Sprintf("cross lock: api.Lock takes over once trellis lock released (%s)", secs(o.at.Sub(t0))),
			o.err == nil && o.lost != nil, "err=%v", o.err)
		if o.err != nil {
			return
		}
	case <-time.After(25 * time.Second):
		ok("cross lock: api.Lock takes over once trellis lock released", false, "not within 25s")
		return
	}

	// The other way round: the api holds, trellis lock waits.
	before := sessionIDs(c)
	tl, err = startTrellisLock(bin, addr, prefix, 1, filepath.Join(dir, "cross-2"))
	if !noErr("cross lock: start a second trellis lock", err) {
		return
	}
	ok("cross lock: the waiting trellis lock made its session",
		waitFor(10*time.Second, func() bool { return newSession(c, before) }), "no new session")
	r, _ := tl.waitRunning(time.Second)
	ok("cross lock: trellis lock does not run its command while api.Lock holds", !r, "it ran")
	t0 = time.Now()
	noErr("cross lock: api Unlock", l.Unlock())
	r, _ = tl.waitRunning(25 * time.Second)
	ok(fmt.Sprintf("cross lock: trellis lock runs its command once api.Lock released (%s)", secs(time.Since(t0))),
		r, "not within 25s")
	ok("cross lock: the second trellis lock exits on SIGTERM", tl.stop(), "still running after 10s")
	ok("cross lock: trellis lock released the key on exit",
		waitFor(5*time.Second, func() bool { p, _ := holderOf(c, prefix+"/.lock"); return p == nil || p.Session == "" }),
		"still held")
}

// testCrossSemaphore: `trellis lock -n 2` and api.Semaphore with limit 2
// share the slots of one prefix.
func testCrossSemaphore(addr, bin, dir string) {
	const prefix = "interop/go/csem"
	c := newClient(addr)
	s, err := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: prefix, Limit: 2, SessionTTL: "10s"})
	if !noErr("cross semaphore: SemaphoreOpts", err) {
		return
	}
	if _, err := s.Acquire(nil); !noErr("cross semaphore: api.Semaphore takes a slot", err) {
		return
	}
	t1, err := startTrellisLock(bin, addr, prefix, 2, filepath.Join(dir, "csem-1"))
	if !noErr("cross semaphore: start trellis lock -n 2", err) {
		return
	}
	defer t1.stop()
	r, d := t1.waitRunning(10 * time.Second)
	if !ok(fmt.Sprintf("cross semaphore: trellis lock -n 2 takes the second slot (%s)", secs(d)), r, "not within 10s") {
		return
	}
	t2, err := startTrellisLock(bin, addr, prefix, 2, filepath.Join(dir, "csem-2"))
	if !noErr("cross semaphore: start a second trellis lock -n 2", err) {
		return
	}
	defer t2.stop()
	// Its contender key shows it is in line.
	contenders := func() int {
		ps, _, err := c.KV().List(prefix+"/", nil)
		if err != nil {
			return -1
		}
		n := 0
		for _, p := range ps {
			if !strings.HasSuffix(p.Key, "/.lock") && p.Session != "" {
				n++
			}
		}
		return n
	}
	ok("cross semaphore: three contender keys", waitFor(10*time.Second, func() bool { return contenders() == 3 }),
		"%d", contenders())
	p, err := holderOf(c, prefix+"/.lock")
	if noErr("cross semaphore: read PREFIX/.lock", err) {
		var l struct {
			Limit   int
			Holders map[string]bool
		}
		err := json.Unmarshal(p.Value, &l)
		ok("cross semaphore: PREFIX/.lock holds the api and trellis lock, limit 2",
			err == nil && l.Limit == 2 && len(l.Holders) == 2 && p.Flags == api.SemaphoreFlagValue,
			"%s flags=%#x err=%v", p.Value, p.Flags, err)
	}
	r, _ = t2.waitRunning(time.Second)
	ok("cross semaphore: the third contender waits while two hold", !r, "it ran")
	t0 := time.Now()
	noErr("cross semaphore: api Release", s.Release())
	r, _ = t2.waitRunning(10 * time.Second)
	ok(fmt.Sprintf("cross semaphore: the waiting trellis lock runs once the api released (%s)", secs(time.Since(t0))),
		r, "not within 10s")
	ok("cross semaphore: both trellis locks exit on SIGTERM", t1.stop() && t2.stop(), "still running after 10s")
}
