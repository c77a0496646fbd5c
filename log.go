package boxcar

// Log keys: every attribute Boxcar logs has one of these names.
const (
	logError            = "err"
	logStream           = "stream"
	logCursor           = "cursor"
	logStreamSeq        = "stream_outbox_seq"
	logSeq              = "seq"
	logFromSeq          = "from_seq"
	logSub              = "subscriber"
	logKey              = "key"
	logEventID          = "event_id"
	logAttempt          = "attempt"
	logReason           = "reason"
	logRetryIn          = "retry_in"
	logPollInterval     = "poll_interval"
	logTypes            = "types"
	logDeadLetter       = "dead_letter"
	logBy               = "by"
	logWhy              = "why"
	logRelease          = "release"
	logUntil            = "until"
	logThroughSeq       = "through_seq"
	logNoDedupe         = "nodedupe"
	logExpired          = "expired"
	logThroughStreamSeq = "through_stream_seq"
)
