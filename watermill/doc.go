// Package boxcarwm runs Watermill (github.com/ThreeDotsLabs/watermill)
// publishers, subscribers and routers on a Boxcar bus: an app written
// against Watermill moves onto Boxcar's transactional outbox, embedded
// JetStream and effectively-once consumers by changing its constructors.
//
//	publisher, _ := boxcarwm.NewPublisher(bus, boxcarwm.PublisherConfig{}, logger)
//	subscriber, _ := boxcarwm.NewSubscriber(bus, boxcarwm.SubscriberConfig{Group: "billing"}, logger)
//
// It is a module of its own (github.com/boxcar-bus/boxcar/watermill), so
// that Boxcar itself does not depend on Watermill.
//
// # Publishing
//
// A Publisher writes each message into the outbox: in the app's
// transaction when the message's context carries one (WithTx), else in a
// transaction of its own; see Publisher for the rules, and for the messages a
// router produces while it handles a message from a Subscriber, which are
// written in that message's transaction. The topic is the event type, as it
// is; the key is the "key" metadata, else the topic; the UUID and the
// metadata travel as headers and come back on the consumer side.
//
// # Subscribing
//
// A Subscriber serves a consumer group: each (topic, group) is one durable,
// transactional Boxcar subscriber, shared by every subscription of the group
// on the bus. A received message carries the handler's transaction
// (TxFromContext): Ack commits it with the dedupe row and then acks the
// event, so that the consumer's writes happen exactly once; Nack rolls it
// back and the message comes again. See Subscriber for what holding that
// transaction means with SQLite's single writer.
//
// # Tested with Watermill's own suite
//
// The package's tests run Watermill's universal Pub/Sub suite
// (pubsub/tests.TestPubSub) in-process, on an embedded server and a
// temporary SQLite file, claiming consumer groups, exactly-once delivery,
// guaranteed order, persistence and new subscribers receiving old messages;
// pubsub_test.go says why each feature holds and why the others are not
// claimed. TestPubSubStressTest runs the suite ten times at once.
package boxcarwm
