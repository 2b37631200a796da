package main

// The api client across two federated datacenters, as a service in dc1
// uses it: the datacenters, dc2's healthy instances and KV through dc1's
// agent (QueryOptions.Datacenter), a blocking query on dc2 woken by a dc2
// write, a prepared query in dc1 that fails over to dc2 and back, the WAN
// coordinates, and the error for a datacenter nobody knows.

import (
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

func testFederation(dc1Addr, dc2Addr string) {
	dc1, dc2 := newClient(dc1Addr), newClient(dc2Addr)

	var dcs []string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		dcs, _ = dc1.Catalog().Datacenters()
		if len(dcs) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok("federation: Catalog().Datacenters() lists dc1 first, then dc2",
		len(dcs) == 2 && dcs[0] == "dc1" && dcs[1] == "dc2", "%v", dcs)

	reg := &api.AgentServiceRegistration{ID: "web-dc2", Name: "web", Port: 8080, Address: "127.0.0.141"}
	if !noErr("federation: register web in dc2", dc2.Agent().ServiceRegister(reg)) {
		return
	}
	inDC2 := &api.QueryOptions{Datacenter: "dc2"}
	var entries []*api.ServiceEntry
	var meta *api.QueryMeta
	var err error
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		entries, meta, err = dc1.Health().Service("web", "", true, inDC2)
		if err == nil && len(entries) == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if noErr("federation: Health().Service(web, passing) in dc2 through dc1", err) {
		ok("federation: dc2's one web instance, node of dc2",
			len(entries) == 1 && entries[0].Service.Address == "127.0.0.141" && entries[0].Node.Datacenter == "dc2",
			"%d entries", len(entries))
		ok("federation: the answer carries dc2's index and a known leader",
			meta.LastIndex > 0 && meta.KnownLeader, "%+v", meta)
	}

	// KV written through dc1 into dc2, read in dc2 and not in dc1.
	_, err = dc1.KV().Put(&api.KVPair{Key: "fed/flag", Value: []byte("on")}, &api.WriteOptions{Datacenter: "dc2"})
	if noErr("federation: KV().Put into dc2 through dc1", err) {
		there, _, err := dc2.KV().Get("fed/flag", nil)
		ok("federation: the key is in dc2", err == nil && there != nil && string(there.Value) == "on", "%v %+v", err, there)
		here, _, err := dc1.KV().Get("fed/flag", nil)
		ok("federation: and not in dc1", err == nil && here == nil, "%v %+v", err, here)
	}

	// A blocking query on dc2's key through dc1, woken by a write in dc2.
	pair, meta, err := dc1.KV().Get("fed/flag", inDC2)
	if noErr("federation: KV().Get in dc2 through dc1", err) && pair != nil {
		woke := make(chan time.Duration, 1)
		var written time.Time
		go func() {
			opts := &api.QueryOptions{Datacenter: "dc2", WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second}
			p, _, err := dc1.KV().Get("fed/flag", opts)
			if err == nil && p != nil && string(p.Value) == "off" {
				woke <- time.Since(written)
			} else {
				woke <- -1
			}
		}()
		time.Sleep(300 * time.Millisecond)
		written = time.Now()
		_, err = dc2.KV().Put(&api.KVPair{Key: "fed/flag", Value: []byte("off")}, nil)
		noErr("federation: KV().Put in dc2", err)
		select {
		case d := <-woke:
			ok("federation: the blocking query in dc2 wakes on dc2's write ("+secs(d)+")", d >= 0, "woke without the new value")
		case <-time.After(20 * time.Second):
			ok("federation: the blocking query in dc2 wakes on dc2's write", false, "no answer within 20s")
		}
	}

	// A prepared query in dc1 with no web of its own: it fails over.
	def := &api.PreparedQueryDefinition{
		Name: "web",
		Service: api.ServiceQuery{
			Service:     "web",
			OnlyPassing: true,
			Failover:    api.QueryFailoverOptions{Datacenters: []string{"dc2"}},
		},
	}
	id, _, err := dc1.PreparedQuery().Create(def, nil)
	if noErr("federation: PreparedQuery().Create in dc1", err) {
		res, _, err := dc1.PreparedQuery().Execute("web", nil)
		if noErr("federation: PreparedQuery().Execute(web) in dc1", err) {
			ok("federation: no web in dc1, so dc2's answers, after one failover",
				res.Datacenter == "dc2" && res.Failovers == 1 && len(res.Nodes) == 1,
				"datacenter %q failovers %d nodes %d", res.Datacenter, res.Failovers, len(res.Nodes))
		}
		local := &api.AgentServiceRegistration{ID: "web-dc1", Name: "web", Port: 8080, Address: "127.0.0.131"}
		if noErr("federation: register web in dc1", dc1.Agent().ServiceRegister(local)) {
			res, _, err := dc1.PreparedQuery().Execute(id, nil)
			ok("federation: with a web of its own, dc1 answers again",
				err == nil && res.Datacenter == "dc1" && res.Failovers == 0 && len(res.Nodes) == 1,
				"%v %+v", err, res)
		}
	}

	// Coordinates come from WAN pings, one a second: wait for both.
	seen := map[string]int{}
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && (seen["dc1"] == 0 || seen["dc2"] == 0) {
		areas, err := dc1.Coordinate().Datacenters()
		if !noErr("federation: Coordinate().Datacenters()", err) {
			break
		}
		seen = map[string]int{}
		for _, a := range areas {
			seen[a.Datacenter] = len(a.Coordinates)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ok("federation: WAN coordinates for both datacenters", seen["dc1"] > 0 && seen["dc2"] > 0,
		"coordinates by datacenter: %v", seen)

	_, _, err = dc1.Health().Service("web", "", true, &api.QueryOptions{Datacenter: "nowhere"})
	ok("federation: an unknown datacenter is Consul's error",
		err != nil && strings.Contains(err.Error(), "No path to datacenter"), "%v", err)
}
