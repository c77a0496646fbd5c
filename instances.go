package boxcar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bjs "github.com/boxcar-bus/boxcar/jetstream"

	"github.com/nats-io/nats.go/jetstream"
)

// Claims of instance IDs. An instance ID names a writer's subtree of a
// shared stream (and a leaf's JetStream domain on a hub): two databases
// publishing under one ID would break each other's chain, and two leaves
// with one domain would both answer the hub's requests for it. So the
// first database to use an ID claims it, in the KV bucket boxcar_instances
// of the cluster (or hub), under "<stream>.<instance ID>"; another database
// asking for it is refused, for good: the subtree holds the first one's
// history. An operator frees an ID whose database is gone for good by
// deleting its key (nats kv del boxcar_instances <stream>.<id>).

// instancesBucket is the KV bucket of instance claims.
const instancesBucket = "boxcar_instances"

// instanceClaim is the value of a claim.
type instanceClaim struct {
	Database string `json:"database"` // boxcar_meta's database_id
	SinceNS  int64  `json:"since_ns"`
}

// ensureBucket returns the KV bucket name, creating it with replicas if it
// does not exist (an existing bucket is used as it is).
func ensureBucket(ctx context.Context, js jetstream.JetStream, name, description string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("KV bucket %s: %w", name, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, Description: description, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, name) // another instance made it meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("create KV bucket %s: %w", name, err)
	}
	return kv, nil
}

// claimInstance claims id for database dbID in the instances bucket of js,
// or returns ErrInstanceTaken if another database holds it. A cluster that
// has just started may have no JetStream responder yet for a moment: that
// is retried for a while (jetstream.RetryTransient).
func claimInstance(ctx context.Context, js jetstream.JetStream, replicas int, stream, id, dbID string) error {
	return bjs.RetryTransient(ctx, func(ctx context.Context) error { return claimInstanceOnce(ctx, js, replicas, stream, id, dbID) })
}

func claimInstanceOnce(ctx context.Context, js jetstream.JetStream, replicas int, stream, id, dbID string) error {
	kv, err := ensureBucket(ctx, js, instancesBucket, "Boxcar: which database each instance ID belongs to", replicas)
	if err != nil {
		return fmt.Errorf("claim instance ID %q: %w", id, err)
	}
	key := stream + "." + id
	for range 3 {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			v, _ := json.Marshal(instanceClaim{Database: dbID, SinceNS: time.Now().UnixNano()})
			if _, err := kv.Create(ctx, key, v); errors.Is(err, jetstream.ErrKeyExists) {
				continue // another one claimed it meanwhile: read it
			} else if err != nil {
				return fmt.Errorf("claim instance ID %q: %w", id, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("claim instance ID %q: %w", id, err)
		}
		var c instanceClaim
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return fmt.Errorf("claim instance ID %q: the claim %s in %s is unreadable (%v): delete it (nats kv del %s %s) if no instance uses it", id, key, instancesBucket, err, instancesBucket, key)
		}
		if c.Database != dbID {
			return fmt.Errorf("%w: Config.InstanceID %q is claimed for stream %s by another database (ID %s, since %s): every instance needs an ID of its own; if that database is gone for good, free the ID with: nats kv del %s %s",
				ErrInstanceTaken, id, stream, c.Database, time.Unix(0, c.SinceNS).UTC().Format(time.RFC3339), instancesBucket, key)
		}
		return nil
	}
	return fmt.Errorf("claim instance ID %q: the claim keeps changing", id)
}
