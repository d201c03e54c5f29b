// Package codec knows bytes and nothing else: WebSocket frame headers, the
// HTTP upgrade on a partially filled buffer, the client JSON messages, the
// ingest lines and the pre-encoded server messages.
//
// Nothing here does I/O, starts goroutines, logs or keeps global mutable
// state. Parsers take a byte slice and return (value, consumed, err) where
// consumed == 0 with a nil error means "need more bytes". Every parser has a
// fuzz test that feeds its input split at a fuzzed offset.
package codec
