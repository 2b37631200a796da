package main

// The api client's ACL calls, and its tokens passed unchanged, against an
// agent with ACLs on and default_policy "deny": a token that may read web
// but not write it, a denied KV write, a management token that may.

import (
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// withToken is an api client of its own that presents token on every call.
func withToken(addr, token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Token = token
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(fmt.Sprintf("api.NewClient: %v", err))
	}
	return c
}

// denied reports whether err is Consul's 403 "Permission denied".
func denied(err error) bool {
	return err != nil && strings.Contains(err.Error(), "403") && strings.Contains(err.Error(), "Permission denied")
}

func testACL(addr, management string) {
	admin := withToken(addr, management)
	self, _, err := admin.ACL().TokenReadSelf(nil)
	if noErr("acl: TokenReadSelf with the management token", err) {
		mgmt := false
		for _, p := range self.Policies {
			mgmt = mgmt || p.Name == "global-management"
		}
		ok("acl: the management token links global-management", mgmt, "%+v", self.Policies)
	}
	policy, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{
		Name:        "go-web-read",
		Description: "reads web from Go",
		Rules:       "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }\nkey_prefix \"go/\" { policy = \"read\" }",
	}, nil)
	if !noErr("acl: PolicyCreate", err) {
		return
	}
	ok("acl: PolicyCreate answers with an ID", policy.ID != "", "%+v", policy)
	got, _, err := admin.ACL().PolicyRead(policy.ID, nil)
	if noErr("acl: PolicyRead", err) {
		ok("acl: PolicyRead round-trips the rules", got.Rules == policy.Rules && got.Name == policy.Name, "%+v", got)
	}
	token, _, err := admin.ACL().TokenCreate(&api.ACLToken{
		Description: "go web reader",
		Policies:    []*api.ACLTokenPolicyLink{{ID: policy.ID}},
	}, nil)
	if !noErr("acl: TokenCreate", err) {
		return
	}
	ok("acl: TokenCreate answers with both IDs and the policy's name",
		token.AccessorID != "" && token.SecretID != "" && len(token.Policies) == 1 && token.Policies[0].Name == "go-web-read",
		"%+v", token)

	reader := withToken(addr, token.SecretID)
	entries, _, err := reader.Health().Service("web", "", false, nil)
	if noErr("acl: the reader's Health().Service(web)", err) {
		ok("acl: the reader reads web", len(entries) >= 1, "%d entries", len(entries))
	}
	err = reader.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-go", Name: "web", Port: 8080})
	ok("acl: the reader may not register web (403 Permission denied)", denied(err), "%v", err)
	_, err = reader.KV().Put(&api.KVPair{Key: "go/flag", Value: []byte("on")}, nil)
	ok("acl: the reader may not write KV (403 Permission denied)", denied(err), "%v", err)
	_, err = admin.KV().Put(&api.KVPair{Key: "go/flag", Value: []byte("on")}, nil)
	noErr("acl: the management token writes KV", err)
	pair, _, err := reader.KV().Get("go/flag", nil)
	if noErr("acl: the reader reads a key under go/", err) {
		ok("acl: the reader reads go/flag", pair != nil && string(pair.Value) == "on", "%+v", pair)
	}
	services, _, err := reader.Catalog().Services(nil)
	if noErr("acl: the reader's Catalog().Services", err) {
		_, hasConsul := services["consul"]
		_, hasWeb := services["web"]
		ok("acl: Catalog().Services is filtered to web", hasWeb && !hasConsul, "%v", services)
	}

	_, err = admin.ACL().TokenDelete(token.AccessorID, nil)
	noErr("acl: TokenDelete", err)
	_, _, err = reader.Catalog().Services(nil)
	ok("acl: a deleted token is refused (403 ACL not found)",
		err != nil && strings.Contains(err.Error(), "ACL not found"), "%v", err)
	_, err = admin.ACL().PolicyDelete(policy.ID, nil)
	noErr("acl: PolicyDelete", err)
}
