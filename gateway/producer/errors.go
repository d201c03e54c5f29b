package producer

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by sends on a Producer that Close has been
	// called on.
	ErrClosed = errors.New("producer closed")
	// ErrInvalidLine is wrapped by the errors of lines refused before they
	// are sent: empty, more than one line, not a JSON object, or an "id" the
	// gateway would not ack. Nothing was sent; resending the same line fails
	// the same way.
	ErrInvalidLine = errors.New("invalid ingest line")
	// ErrLineTooLong is wrapped by the error of a line longer than
	// Options.MaxLineBytes (after the producer inserts its id). Nothing was
	// sent.
	ErrLineTooLong = errors.New("ingest line too long")
	// ErrAckTimeout is the cause (inside a *MaybeStoredError) of messages
	// failed because the gateway answered nothing for Options.AckTimeout.
	ErrAckTimeout = errors.New("no answer from the gateway within the ack timeout")
)

// RejectError is the gateway's error line for a message: the gateway did not
// store it. Resending the same bytes is pointless when the line is malformed;
// a message the gateway could not store for a fault of its cluster bus
// (Retryable) was resent for Options.RetryTimeout already, and may succeed
// later.
type RejectError struct {
	// Line is the 1-based line number on the connection the message was
	// sent on, as the gateway reported it. It identifies the line within one
	// connection only. 0: the message was never sent, held behind one the
	// gateway could not store (Retryable).
	Line int
	// Message is the gateway's explanation.
	Message string
	// Retryable: the line was fine; the gateway's cluster bus was down or
	// had no stream leader ("retry":"not_stored").
	Retryable bool
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("gateway rejected line %d: %s", e.Line, e.Message)
}

// RefusedError fails the messages in flight on a connection the gateway
// refused or dropped with an answer about the connection rather than a line
// ("line":0): a missing, bad, expired or revoked token ("authentication
// failed: …"), too many producer connections, too many bad lines. The
// gateway answers every line it read before such an answer, so the messages
// it fails were not stored: resend them once the cause is fixed (a new
// token, say).
type RefusedError struct {
	// Message is the gateway's explanation.
	Message string
}

func (e *RefusedError) Error() string {
	return "gateway refused the connection: " + e.Message
}

// MaybeStoredError fails a message that was written (or queued to be
// written) but not answered: the connection failed, the gateway did not
// answer within Options.AckTimeout, the caller's context ended while Send
// waited, or the gateway's cluster bus kept answering that it could not
// confirm the line ("retry":"maybe_stored") for Options.RetryTimeout. The gateway may or may not have stored the message. To retry
// without risking a duplicate, resend it with the same "id" (ID below): the
// gateway acks by id, so a duplicate is recognisable downstream.
type MaybeStoredError struct {
	// ID is the "id" the message was sent with: the caller's, or the one the
	// producer inserted.
	ID string
	// Err says why the outcome is unknown.
	Err error
}

func (e *MaybeStoredError) Error() string {
	return fmt.Sprintf("message %q may or may not have been stored: %v", e.ID, e.Err)
}

func (e *MaybeStoredError) Unwrap() error { return e.Err }

// errConnDead makes a sender that raced with a failing connection dial again.
var errConnDead = errors.New("connection is dead")

// errClosing is the cause of a connection closed by Producer.Close once it
// had nothing in flight; it never reaches a caller.
var errClosing = errors.New("closing")
