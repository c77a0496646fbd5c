package jetstream

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats-server/v2/server"
)

// The users of the listener (ServerConfig.Listen).
const (
	// InspectUser logs in with ServerConfig.InspectPassword and can read,
	// nothing else (InspectAPI).
	InspectUser = "inspect"
	// AdminUser logs in with ServerConfig.AdminPassword and can do
	// anything in the bus's account.
	AdminUser = "admin"
)

// internalUser is the bus's own connection: every right, in-process only,
// with a random password made at each start and never shown.
const internalUser = "boxcar"

// inspectAccount is the inspect user's account. It holds no stream: the
// inspector reaches the bus's account only through the read-only requests
// that account exports to it (InspectAPI). Being in an account of its own is
// what makes read-only true. Within the bus's account, publish permissions
// alone would not do: a request's reply subject is not checked against
// them, so a read request with the reply subject "boxcar.x.y" makes the
// server publish its answer there, into the event stream (checked on
// v2.15.3: a STREAM.INFO answer was stored as a message; a DIRECT.GET answer
// carries a stored event's headers, Nats-Msg-Id included, so past the
// duplicate window it would be stored again: a replay). Across accounts the
// answer goes back to the inspector's account, where no stream listens.
const inspectAccount = "BOXCAR_INSPECT"

// InspectAPI returns the JetStream API requests of the inspect user: the
// read-only ones, in nats-server's own subject patterns. The bus's account
// exports them to the inspect account, and they are the only subjects the
// inspect user may publish on; it may subscribe only to _INBOX.> (its
// answers). Everything else is refused: publishing events, creating,
// updating, deleting or purging streams and consumers, deleting messages,
// fetching from a consumer (CONSUMER.MSG.NEXT), acks and naks ($JS.ACK.>),
// snapshots, and subscribing to event subjects.
func InspectAPI() []string { return slices.Clone(inspectAPI) }

var inspectAPI = []string{
	server.JSApiAccountInfo,         // $JS.API.INFO
	server.JSApiStreams,             // $JS.API.STREAM.NAMES
	server.JSApiStreamList,          // $JS.API.STREAM.LIST
	server.JSApiStreamInfo,          // $JS.API.STREAM.INFO.*
	server.JSApiConsumers,           // $JS.API.CONSUMER.NAMES.*
	server.JSApiConsumerList,        // $JS.API.CONSUMER.LIST.*
	server.JSApiConsumerInfo,        // $JS.API.CONSUMER.INFO.*.*
	server.JSApiMsgGet,              // $JS.API.STREAM.MSG.GET.*
	server.JSDirectMsgGet,           // $JS.API.DIRECT.GET.*
	server.JSDirectGetLastBySubject, // $JS.API.DIRECT.GET.*.>
}

// inspectInbox is what the inspect user may subscribe to: the answers to
// its requests.
const inspectInbox = "_INBOX.>"

// streamedAPI are the requests of InspectAPI that may answer with several
// messages (a batched direct get); the others answer once.
var streamedAPI = map[string]bool{server.JSDirectMsgGet: true, server.JSDirectGetLastBySubject: true}

// Connection types of server.User.AllowedConnectionTypes (nats-server
// checks the names; they are the jwt package's ConnectionType constants).
const (
	connInProcess = "IN_PROCESS"
	connStandard  = "STANDARD"
)

// authorize returns the accounts and users of the server: the bus's
// account ($G, where the streams are), the inspect account, the internal
// user and the listener's users that cfg enables. Every connection, the
// in-process one too, logs in.
func authorize(cfg ServerConfig, internalPassword string) ([]*server.Account, []*server.User, error) {
	bus := server.NewAccount(server.DEFAULT_GLOBAL_ACCOUNT)
	inspect := server.NewAccount(inspectAccount)
	for _, subj := range inspectAPI {
		var err error
		if streamedAPI[subj] {
			err = bus.AddServiceExportWithResponse(subj, server.Streamed, []*server.Account{inspect})
		} else {
			err = bus.AddServiceExport(subj, []*server.Account{inspect})
		}
		if err == nil {
			err = inspect.AddServiceImport(bus, subj, subj)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("jetstream: inspect account: %s: %w", subj, err)
		}
	}
	users := []*server.User{{
		Username:               internalUser,
		Password:               internalPassword,
		Account:                bus,
		AllowedConnectionTypes: map[string]struct{}{connInProcess: {}},
	}}
	if cfg.InspectPassword != "" {
		users = append(users, &server.User{
			Username: InspectUser,
			Password: cfg.InspectPassword,
			Account:  inspect,
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: slices.Clone(inspectAPI)},
				Subscribe: &server.SubjectPermission{Allow: []string{inspectInbox}},
			},
			AllowedConnectionTypes: map[string]struct{}{connStandard: {}},
		})
	}
	if cfg.AdminPassword != "" {
		users = append(users, &server.User{
			Username:               AdminUser,
			Password:               cfg.AdminPassword,
			Account:                bus,
			AllowedConnectionTypes: map[string]struct{}{connStandard: {}},
		})
	}
	return []*server.Account{bus, inspect}, users, nil
}
