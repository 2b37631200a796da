// Command consulapi runs hashicorp/consul/api's Lock, Semaphore, blocking
// queries and transactions against a trellis agent, the way consul-template,
// Nomad, Vault and Traefik use that library.
//
// Usage: consulapi -addr IP:PORT (or CONSUL_HTTP_ADDR). Prints one
// `PASS name` or `FAIL name: why` line per assertion and exits non-zero if
// any failed. Every wait has a deadline, and -timeout bounds the whole run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

var failed atomic.Int32

// ok prints one PASS or FAIL line.
func ok(name string, cond bool, detail string, args ...any) bool {
	if cond {
		fmt.Printf("PASS %s\n", name)
	} else {
		failed.Add(1)
		fmt.Printf("FAIL %s: %s\n", name, fmt.Sprintf(detail, args...))
	}
	return cond
}

// noErr reports err as a failure of name; true when there was none.
func noErr(name string, err error) bool {
	if err != nil {
		return ok(name, false, "%v", err)
	}
	return true
}

// secs formats a duration for the report lines.
func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// newClient is one API client of its own (own connection pool), as each
// contender would be a separate process.
func newClient(addr string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		fmt.Printf("FAIL api.NewClient: %v\n", err)
		os.Exit(1)
	}
	return c
}

// outcome of a Lock() or Acquire() call run in the background.
type outcome struct {
	who  int
	lost <-chan struct{}
	err  error
	at   time.Time
}

// holderOf reads key and returns its Session and Value.
func holderOf(c *api.Client, key string) (*api.KVPair, error) {
	p, _, err := c.KV().Get(key, nil)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("key %q missing", key)
	}
	return p, nil
}

// closedWithin reports whether ch closes within d, and how long it took.
func closedWithin(ch <-chan struct{}, d time.Duration) (bool, time.Duration) {
	t0 := time.Now()
	select {
	case <-ch:
		return true, time.Since(t0)
	case <-time.After(d):
		return false, d
	}
}

// lockDelay is what every lock here asks for, so that a handoff after
// a destroy or an expiry is not held up by Consul's default 15s.
const lockDelay = time.Second

// testLockDestroy: two Locks on one key; exactly one holds it; destroying
// its session hands the lock to the other and closes the first's lost
// channel.
func testLockDestroy(addr string) {
	const key = "interop/go/lock-destroy"
	var locks [2]*api.Lock
	var clients [2]*api.Client
	for i := range locks {
		clients[i] = newClient(addr)
		l, err := clients[i].LockOpts(&api.LockOptions{
			Key: key, Value: []byte(fmt.Sprintf("holder-%d", i)), SessionTTL: "10s", LockDelay: lockDelay,
		})
		if !noErr("lock: LockOpts", err) {
			return
		}
		locks[i] = l
	}
	results := make(chan outcome, 2)
	for i := range locks {
		go func(i int) {
			lost, err := locks[i].Lock(nil)
			results <- outcome{who: i, lost: lost, err: err, at: time.Now()}
		}(i)
	}
	var first outcome
	select {
	case first = <-results:
	case <-time.After(10 * time.Second):
		ok("lock: one of two contenders acquires", false, "neither Lock() returned in 10s")
		return
	}
	if !ok("lock: one of two contenders acquires", first.err == nil && first.lost != nil, "err=%v", first.err) {
		return
	}
	winner, other := first.who, 1-first.who
	c := clients[0]
	p, err := holderOf(c, key)
	if !noErr("lock: read the lock key", err) {
		return
	}
	ok("lock: the key names the winner's value and the Lock flags",
		string(p.Value) == fmt.Sprintf("holder-%d", first.who) && p.Flags == api.LockFlagValue && p.Session != "",
		"value=%q flags=%#x session=%q", p.Value, p.Flags, p.Session)
	ok("lock: LockIndex is 1 after the first acquire", p.LockIndex == 1, "LockIndex=%d", p.LockIndex)
	select {
	case o := <-results:
		ok("lock: the other contender still waits", false, "it returned too: err=%v", o.err)
		return
	default:
		ok("lock: the other contender still waits", true, "")
	}
	info, _, err := c.Session().Info(p.Session, nil)
	if noErr("lock: session info of the holder", err) {
		ok("lock: the holder's session is as the api created it",
			info != nil && info.Name == api.DefaultLockSessionName && info.TTL == "10s" &&
				info.LockDelay == lockDelay && info.Behavior == api.SessionBehaviorRelease,
			"%+v", info)
	}

	t0 := time.Now()
	_, err = c.Session().Destroy(p.Session, nil)
	if !noErr("lock: destroy the holder's session", err) {
		return
	}
	closed, d := closedWithin(first.lost, 5*time.Second)
	ok(fmt.Sprintf("lock: the holder's lost channel closes after its session is destroyed (%s)", secs(d)),
		closed, "still open after %s", secs(d))
	// The waiter wakes at once, meets the lock-delay the destroy set, and
	// retries after api.DefaultLockRetryTime.
	bound := lockDelay + api.DefaultLockRetryTime + 3*time.Second
	select {
	case o := <-results:
		ok(fmt.Sprintf("lock: the other contender takes the lock after the destroy (%s)", secs(o.at.Sub(t0))),
			o.err == nil && o.lost != nil && o.who == other, "who=%d err=%v", o.who, o.err)
		first = o
	case <-time.After(bound):
		ok("lock: the other contender takes the lock after the destroy", false, "not within %s", bound)
		return
	}
	p, err = holderOf(c, key)
	if noErr("lock: read the lock key after the handoff", err) {
		ok("lock: the key now names the other holder, LockIndex 2",
			string(p.Value) == fmt.Sprintf("holder-%d", other) && p.Session != "" && p.LockIndex == 2,
			"value=%q session=%q LockIndex=%d", p.Value, p.Session, p.LockIndex)
	}
	noErr("lock: Unlock", locks[other].Unlock())
	closed, _ = closedWithin(first.lost, 5*time.Second)
	ok("lock: Unlock closes the holder's lost channel", closed, "still open")
	p, _, err = c.KV().Get(key, nil)
	if noErr("lock: read the lock key after Unlock", err) {
		ok("lock: Unlock leaves the key unheld", p != nil && p.Session == "", "%+v", p)
	}
	noErr("lock: Destroy removes the unheld key", locks[other].Destroy())
	p, _, err = c.KV().Get(key, nil)
	if noErr("lock: read the lock key after Destroy", err) {
		ok("lock: the key is gone after Destroy", p == nil, "%+v", p)
	}
	// The first lock still thinks it holds (its session was destroyed under
	// it); Unlock's release fails quietly, as against Consul.
	_ = locks[winner].Unlock()
}

// testLockTTL: a holder whose session is never renewed loses the lock once
// the TTL (×2, Consul's grace) runs out, and the waiter takes it.
func testLockTTL(addr string) {
	const key = "interop/go/lock-ttl"
	const ttl = 10 * time.Second
	c := newClient(addr)
	created := time.Now()
	sid, _, err := c.Session().Create(&api.SessionEntry{
		Name: "interop ttl holder", TTL: ttl.String(), LockDelay: lockDelay, Behavior: api.SessionBehaviorRelease,
	}, nil)
	if !noErr("ttl: create the holder's session (TTL 10s, never renewed)", err) {
		return
	}
	holder, err := c.LockOpts(&api.LockOptions{Key: key, Session: sid, Value: []byte("holder")})
	if !noErr("ttl: LockOpts with our own session", err) {
		return
	}
	lost, err := holder.Lock(nil)
	if !ok("ttl: the holder acquires at once", err == nil && lost != nil, "err=%v", err) {
		return
	}
	wc := newClient(addr)
	waiter, err := wc.LockOpts(&api.LockOptions{Key: key, Value: []byte("waiter"), SessionTTL: "10s", LockDelay: lockDelay})
	if !noErr("ttl: LockOpts for the waiter", err) {
		return
	}
	got := make(chan outcome, 1)
	go func() {
		l, err := waiter.Lock(nil)
		got <- outcome{lost: l, err: err, at: time.Now()}
	}()

	// Watch the key with blocking queries, as any client would, to see when
	// the server released it.
	released := make(chan time.Time, 1)
	go func() {
		var idx uint64
		for time.Since(created) < 3*ttl+10*time.Second {
			p, meta, err := c.KV().Get(key, &api.QueryOptions{WaitIndex: idx, WaitTime: 5 * time.Second})
			if err != nil {
				return
			}
			idx = meta.LastIndex
			if p == nil || p.Session != sid {
				released <- time.Now()
				return
			}
		}
	}()

	bound := 2*ttl + 2*time.Second
	var rel time.Time
	select {
	case rel = <-released:
	case <-time.After(time.Until(created.Add(bound))):
		ok("ttl: the server releases the lock within TTL×2", false, "still held after %s", secs(bound))
		return
	}
	held := rel.Sub(created)
	ok(fmt.Sprintf("ttl: the expired session's lock is released after %s (TTL %s, ×2 = %s)", secs(held), ttl, 2*ttl),
		held >= ttl && held <= bound, "released after %s, wanted between %s and %s", secs(held), ttl, secs(bound))
	closed, d := closedWithin(lost, 5*time.Second)
	ok(fmt.Sprintf("ttl: the holder's lost channel closes (%s after the release)", secs(d)), closed, "still open")
	// Lock-delay, then the waiter's next try after api.DefaultLockRetryTime.
	wbound := lockDelay + api.DefaultLockRetryTime + 3*time.Second
	select {
	case o := <-got:
		took := o.at.Sub(created)
		ok(fmt.Sprintf("ttl: the waiter takes over %s after the holder's session was made (release + %s)",
			secs(took), secs(o.at.Sub(rel))),
			o.err == nil && o.lost != nil && took <= 2*ttl+lockDelay+api.DefaultLockRetryTime+3*time.Second,
			"err=%v after %s", o.err, secs(took))
		if o.err == nil {
			noErr("ttl: waiter Unlock", waiter.Unlock())
			noErr("ttl: waiter Destroy", waiter.Destroy())
		}
	case <-time.After(wbound):
		ok("ttl: the waiter takes over", false, "not within %s of the release", wbound)
	}
	sess, _, err := c.Session().Info(sid, nil)
	if noErr("ttl: session info after expiry", err) {
		ok("ttl: the expired session is gone", sess == nil, "%+v", sess)
	}
	// The api turns renew's 404 into a nil entry (RenewPeriodic's
	// ErrSessionExpired).
	renewed, _, err := c.Session().Renew(sid, nil)
	ok("ttl: renewing the expired session finds none (404)", err == nil && renewed == nil, "entry=%+v err=%v", renewed, err)
}

// testSemaphore: limit 2, three contenders; two hold, the third waits and
// takes the slot one of them releases.
func testSemaphore(addr string) {
	const prefix = "interop/go/sem"
	var sems [3]*api.Semaphore
	for i := range sems {
		s, err := newClient(addr).SemaphoreOpts(&api.SemaphoreOptions{
			Prefix: prefix, Limit: 2, SessionTTL: "10s", Value: []byte(fmt.Sprintf("c%d", i)),
		})
		if !noErr("semaphore: SemaphoreOpts", err) {
			return
		}
		sems[i] = s
	}
	results := make(chan outcome, 3)
	for i := range sems {
		go func(i int) {
			lost, err := sems[i].Acquire(nil)
			results <- outcome{who: i, lost: lost, err: err, at: time.Now()}
		}(i)
	}
	var holders []outcome
	deadline := time.After(10 * time.Second)
	for len(holders) < 2 {
		select {
		case o := <-results:
			if !ok(fmt.Sprintf("semaphore: contender %d acquires", o.who), o.err == nil && o.lost != nil, "err=%v", o.err) {
				return
			}
			holders = append(holders, o)
		case <-deadline:
			ok("semaphore: two of three acquire", false, "only %d within 10s", len(holders))
			return
		}
	}
	c := newClient(addr)
	// All three contender keys exist (the third registered and waits).
	var pairs api.KVPairs
	end := time.Now().Add(5 * time.Second)
	for {
		var err error
		pairs, _, err = c.KV().List(prefix, nil)
		if err != nil || len(pairs) == 4 || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var keys []string
	var lockPair *api.KVPair
	for _, p := range pairs {
		keys = append(keys, p.Key)
		if p.Key == prefix+"/.lock" {
			lockPair = p
		}
	}
	ok("semaphore: .lock and three contender keys under the prefix", len(pairs) == 4 && lockPair != nil, "%v", keys)
	if lockPair != nil {
		var l struct {
			Limit   int
			Holders map[string]bool
		}
		err := json.Unmarshal(lockPair.Value, &l)
		ok("semaphore: .lock says limit 2 with two holders",
			err == nil && l.Limit == 2 && len(l.Holders) == 2 && lockPair.Flags == api.SemaphoreFlagValue,
			"%s flags=%#x err=%v", lockPair.Value, lockPair.Flags, err)
	}
	// A window in which the third must not get in.
	select {
	case o := <-results:
		ok("semaphore: the third does not acquire while two hold", false, "contender %d acquired: %v", o.who, o.err)
		return
	case <-time.After(time.Second):
		ok("semaphore: the third does not acquire while two hold", true, "")
	}
	third := 3 - holders[0].who - holders[1].who
	t0 := time.Now()
	noErr("semaphore: Release by one holder", sems[holders[0].who].Release())
	select {
	case o := <-results:
		ok(fmt.Sprintf("semaphore: the third acquires after a release (%s)", secs(o.at.Sub(t0))),
			o.who == third && o.err == nil && o.lost != nil, "who=%d err=%v", o.who, o.err)
	case <-time.After(5 * time.Second):
		ok("semaphore: the third acquires after a release", false, "not within 5s")
		return
	}
	closed, _ := closedWithin(holders[0].lost, 5*time.Second)
	ok("semaphore: the releaser's lost channel closes", closed, "still open")
	noErr("semaphore: Release by the second holder", sems[holders[1].who].Release())
	noErr("semaphore: Release by the third", sems[third].Release())
	noErr("semaphore: Destroy once nobody holds it", sems[third].Destroy())
	pairs, _, err := c.KV().List(prefix, nil)
	if noErr("semaphore: list after Destroy", err) {
		var left []string
		for _, p := range pairs {
			left = append(left, p.Key)
		}
		ok("semaphore: nothing left under the prefix", len(pairs) == 0, "%v", left)
	}
}

// renderer keeps the latest rendering of a blocking-query loop, the number
// of answers it got and its last error.
type renderer struct {
	mu    sync.Mutex
	text  string
	wakes int
	err   error
}

func (r *renderer) set(text string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.err = err
		return
	}
	r.wakes++
	r.text = text
}

func (r *renderer) get() (string, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.text, r.wakes, r.err
}

// waitRender waits up to d for the rendering to equal want (after at least
// one answer).
func (r *renderer) waitRender(want string, d time.Duration) (bool, time.Duration, string) {
	t0 := time.Now()
	for {
		got, wakes, _ := r.get()
		if got == want && wakes > 0 {
			return true, time.Since(t0), got
		}
		if time.Since(t0) > d {
			return false, d, got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testWatch: the watch-and-render loop consul-template runs, with blocking
// queries on a key and on a service's health.
func testWatch(addr string, stop <-chan struct{}) {
	const key = "interop/go/watch/app/config"
	const svc = "interop-go-web"
	c := newClient(addr)
	kvr, svr := &renderer{}, &renderer{}

	go func() {
		var idx uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, meta, err := c.KV().Get(key, &api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second})
			if err != nil {
				kvr.set("", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if meta.LastIndex == 0 {
				kvr.set("", fmt.Errorf("no X-Consul-Index in the answer"))
				time.Sleep(100 * time.Millisecond)
				continue
			}
			idx = meta.LastIndex
			if p == nil {
				kvr.set("<missing>", nil)
			} else {
				kvr.set(string(p.Value), nil)
			}
		}
	}()
	go func() {
		var idx uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			es, meta, err := c.Health().Service(svc, "", false, &api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second})
			if err != nil {
				svr.set("", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if meta.LastIndex == 0 {
				svr.set("", fmt.Errorf("no X-Consul-Index in the answer"))
				time.Sleep(100 * time.Millisecond)
				continue
			}
			idx = meta.LastIndex
			var parts []string
			for _, e := range es {
				parts = append(parts, fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port))
			}
			sort.Strings(parts)
			svr.set(strings.Join(parts, ","), nil)
		}
	}()

	r, d, got := kvr.waitRender("<missing>", 5*time.Second)
	_, _, werr := kvr.get()
	ok("watch: first render of a missing key", r, "got %q (err %v)", got, werr)
	const deadline = 3 * time.Second
	var worst time.Duration
	for i := 1; i <= 5; i++ {
		want := fmt.Sprintf("value %d", i)
		if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(want)}, nil); !noErr("watch: put", err) {
			return
		}
		r, d, got = kvr.waitRender(want, deadline)
		if !ok(fmt.Sprintf("watch: render %d follows the put (%s)", i, secs(d)), r, "rendered %q", got) {
			return
		}
		worst = max(worst, d)
	}
	fmt.Printf("INFO watch: slowest of 5 key re-renders %s\n", secs(worst))

	// Writes elsewhere in the KV do not wake a watch on one present key.
	_, before, _ := kvr.get()
	for i := 0; i < 5; i++ {
		noErr("watch: put an unrelated key", func() error {
			_, err := c.KV().Put(&api.KVPair{Key: fmt.Sprintf("interop/go/watch/other/%d", i), Value: []byte("x")}, nil)
			return err
		}())
	}
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte("final")}, nil); noErr("watch: put", err) {
		r, _, got = kvr.waitRender("final", deadline)
		_, after, _ := kvr.get()
		ok("watch: five unrelated writes do not wake the key's watch", r && after-before == 1,
			"%d wakes for one write to the key and five elsewhere (rendered %q)", after-before, got)
	}

	r, _, got = svr.waitRender("", 5*time.Second)
	ok("watch: first render of the service (none yet)", r, "got %q", got)
	worst = 0
	var want []string
	for i := 1; i <= 3; i++ {
		reg := &api.AgentServiceRegistration{
			ID: fmt.Sprintf("%s-%d", svc, i), Name: svc, Address: fmt.Sprintf("127.0.1.%d", i), Port: 8000 + i,
		}
		if !noErr("watch: register a service instance", c.Agent().ServiceRegister(reg)) {
			return
		}
		want = append(want, fmt.Sprintf("%s:%d", reg.Address, reg.Port))
		r, d, got = svr.waitRender(strings.Join(want, ","), deadline)
		if !ok(fmt.Sprintf("watch: render lists %d instance(s) (%s)", i, secs(d)), r, "rendered %q", got) {
			return
		}
		worst = max(worst, d)
	}
	if noErr("watch: deregister an instance", c.Agent().ServiceDeregister(svc+"-2")) {
		r, d, got = svr.waitRender(want[0]+","+want[2], deadline)
		ok(fmt.Sprintf("watch: render drops the deregistered instance (%s)", secs(d)), r, "rendered %q", got)
		worst = max(worst, d)
	}
	fmt.Printf("INFO watch: slowest of 4 service re-renders %s\n", secs(worst))
	for _, id := range []string{"-1", "-3"} {
		_ = c.Agent().ServiceDeregister(svc + id)
	}
	_, _ = c.KV().DeleteTree("interop/go/watch/", nil)
}

// testTxn: a transaction through the api's KV().Txn: one that applies,
// one that fails and changes nothing.
func testTxn(addr string) {
	c := newClient(addr)
	const a, b = "interop/go/txn/a", "interop/go/txn/b"
	okTxn, resp, _, err := c.KV().Txn(api.KVTxnOps{
		{Verb: api.KVSet, Key: a, Value: []byte("1")},
		{Verb: api.KVSet, Key: b, Value: []byte("2"), Flags: 7},
		{Verb: api.KVGet, Key: a},
	}, nil)
	if noErr("txn: a transaction of set, set, get", err) {
		ok("txn: it commits with three results", okTxn && resp != nil && len(resp.Results) == 3 && len(resp.Errors) == 0,
			"ok=%v resp=%+v", okTxn, resp)
		if okTxn && len(resp.Results) == 3 {
			ok("txn: the get sees the set before it, all at one index",
				string(resp.Results[2].Value) == "1" && resp.Results[0].ModifyIndex == resp.Results[1].ModifyIndex &&
					resp.Results[1].Flags == 7,
				"%+v %+v %+v", resp.Results[0], resp.Results[1], resp.Results[2])
		}
	}
	pb, _, _ := c.KV().Get(b, nil)
	okTxn, resp, _, err = c.KV().Txn(api.KVTxnOps{
		{Verb: api.KVSet, Key: a, Value: []byte("changed")},
		{Verb: api.KVCheckIndex, Key: b, Index: 1},
	}, nil)
	if noErr("txn: a failing transaction returns no transport error", err) {
		ok("txn: it rolls back with an error naming op 1",
			!okTxn && resp != nil && len(resp.Errors) == 1 && resp.Errors[0].OpIndex == 1 && len(resp.Results) == 0,
			"ok=%v resp=%+v", okTxn, resp)
	}
	pa, _, _ := c.KV().Get(a, nil)
	ok("txn: the failed transaction changed nothing", pa != nil && string(pa.Value) == "1" && pb != nil,
		"a=%+v", pa)
	_, _ = c.KV().DeleteTree("interop/go/txn/", nil)
}

func main() {
	addr := flag.String("addr", os.Getenv("CONSUL_HTTP_ADDR"), "the trellis agent's HTTP address (IP:PORT)")
	timeout := flag.Duration("timeout", 150*time.Second, "bound on the whole run")
	only := flag.String("only", "", "comma-separated tests to run (lock,ttl,semaphore,watch,txn,cross); all by default; the acl tests run alone, with -acl-token")
	trellis := flag.String("trellis", "", "the trellis binary: `trellis lock` against the api's Lock and Semaphore (cross)")
	aclToken := flag.String("acl-token", "", "a management token of an agent with ACLs on: run the acl tests (only those)")
	dc2Addr := flag.String("dc2-addr", "", "an agent of dc2, WAN-joined to -addr's dc1: run the federation tests (only those)")
	flag.Parse()
	if *addr == "" {
		fmt.Println("FAIL usage: give -addr or CONSUL_HTTP_ADDR")
		os.Exit(2)
	}
	time.AfterFunc(*timeout, func() {
		fmt.Printf("FAIL the run finished within %s\n", *timeout)
		killAllRuns()
		os.Exit(1)
	})
	want := func(name string) bool {
		return *only == "" || strings.Contains(","+*only+",", ","+name+",")
	}
	if *dc2Addr != "" {
		testFederation(*addr, *dc2Addr)
		if failed.Load() > 0 {
			os.Exit(1)
		}
		return
	}
	if *aclToken != "" {
		testACL(*addr, *aclToken)
		if failed.Load() > 0 {
			os.Exit(1)
		}
		return
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The TTL test spends most of its time waiting for the expiry: run it
	// beside the others (their keys are disjoint).
	if want("ttl") {
		wg.Add(1)
		go func() { defer wg.Done(); testLockTTL(*addr) }()
	}
	if want("lock") {
		testLockDestroy(*addr)
	}
	if want("semaphore") {
		testSemaphore(*addr)
	}
	if want("watch") {
		testWatch(*addr, stop)
	}
	if want("txn") {
		testTxn(*addr)
	}
	if want("cross") && *trellis != "" {
		dir, err := os.MkdirTemp("", "consulapi-cross")
		if noErr("cross: a temporary directory", err) {
			testCrossLock(*addr, *trellis, dir)
			testCrossSemaphore(*addr, *trellis, dir)
			killAllRuns()
			_ = os.RemoveAll(dir)
		}
	}
	wg.Wait()
	close(stop)
	if n := failed.Load(); n > 0 {
		fmt.Printf("%d failed\n", n)
		os.Exit(1)
	}
}
