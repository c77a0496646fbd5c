package jetstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reads that decide. The event stream allows direct gets, which any replica
// that is nearly caught up answers (nats-server subscribes a follower once
// it is 90% synchronized, and a mirror with MirrorDirect answers too). One
// that is behind answers "not found" for a message the stream holds, and
// an older message for the last one of a subject. Where the answer decides
// something (the end of the stream that Resync moves the cursor to, the
// first event that dedupe pruning goes by, the history a subscriber that
// gained types is given, a replay's start), it comes from the stream's
// leader, through the stream message get API, whose answer is the stream's.

// GetMsg returns the message at seq of stream s: a direct get, and a "not
// found" confirmed by the stream's leader. It returns
// jetstream.ErrMsgNotFound only when the leader has no message at seq
// (deleted, expired or never stored).
func GetMsg(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := s.GetMsg(ctx, seq)
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return m, err
	}
	info := s.CachedInfo()
	if info == nil || !info.Config.AllowDirect {
		return nil, err // the leader answered already
	}
	return leaderGetMsg(ctx, js, info.Config.Name, msgGetRequest{Seq: seq})
}

// LastMsgForSubject returns the last message of stream s on subject (a
// wildcard matches its subtree), as the stream's leader has it: a replica
// that is behind would answer with an older one.
func LastMsgForSubject(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	info := s.CachedInfo()
	if info == nil {
		return s.GetLastMsgForSubject(ctx, subject)
	}
	return leaderGetMsg(ctx, js, info.Config.Name, msgGetRequest{LastFor: subject})
}

// NextMsgForSubject returns the first message of stream s at or after seq
// on subject (a wildcard matches its subtree), as the stream's leader has
// it: a replica that is behind would answer with a later one, or none.
func NextMsgForSubject(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	info := s.CachedInfo()
	if info == nil {
		return s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
	}
	return leaderGetMsg(ctx, js, info.Config.Name, msgGetRequest{Seq: seq, NextFor: subject})
}

// msgGetRequest is the stream message get API's request.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// msgGetResponse is the stream message get API's answer.
type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// leaderGetMsg asks the leader of stream name for a message.
func leaderGetMsg(ctx context.Context, js jetstream.JetStream, name string, r msgGetRequest) (*jetstream.RawStreamMsg, error) {
	o := js.Options()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmp.Or(o.DefaultTimeout, 5*time.Second))
		defer cancel()
	}
	what := fmt.Sprintf("message %d", r.Seq)
	switch {
	case r.LastFor != "":
		what = "the last message of " + r.LastFor
	case r.NextFor != "":
		what = fmt.Sprintf("the first message of %s from %d", r.NextFor, r.Seq)
	}
	req, _ := json.Marshal(r) // cannot fail
	subject := apiPrefix(o) + "STREAM.MSG.GET." + name
	reply, err := js.Conn().RequestWithContext(ctx, subject, req)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		// A request the user may not publish is dropped: the server tells
		// only the connection's async error handler.
		return nil, fmt.Errorf("get %s from the stream leader: no answer (may this connection's user publish to %s?): %w", what, subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s from the stream leader: %w", what, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("get %s from the stream leader: %w", what, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("get %s from the stream leader: %w", what, resp.Error)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("get %s from the stream leader: %w", what, jetstream.ErrInvalidJetStreamResponse)
	}
	m := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("get %s from the stream leader: %w", what, err)
		}
	}
	return m, nil
}

// apiPrefix is the JetStream API prefix js sends its requests with.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}
