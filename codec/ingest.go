package codec

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/bytedance/sonic"
)

// Ingest is one parsed ingest line. Data and Alerts may alias the line: copy them
// (or encode them into a frame) before the line's buffer is reused.
type Ingest struct {
	City string
	Kind Kind
	// ID is the producer's optional message id; when set the gateway acks.
	ID string
	// Data is the raw JSON object of a data_update or snapshot.
	Data []byte
	// Alerts is the raw JSON array of an alerts message.
	Alerts []byte
	// Severity is the highest severity in Alerts.
	Severity Severity
	// Timestamp is the producer's time in Unix milliseconds; 0 if absent.
	Timestamp int64
}

type ingestJSON struct {
	City      string                 `json:"city"`
	Type      string                 `json:"type"`
	ID        string                 `json:"id"`
	Data      sonic.NoCopyRawMessage `json:"data"`
	Alerts    sonic.NoCopyRawMessage `json:"alerts"`
	Timestamp int64                  `json:"timestamp"`
}

type alertJSON struct {
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

// MaxAlertsPerMessage bounds the alerts one ingest line may carry.
const MaxAlertsPerMessage = 64

// MaxIDLen bounds the producer's message id.
const MaxIDLen = 128

// ErrIngest is wrapped by every ingest parse error.
var ErrIngest = errors.New("invalid ingest line")

// apiChecked is api for input CheckJSON has accepted: sonic does not
// check again what it skips or takes raw, it only picks the fields. That
// takes back most of what CheckJSON costs: BenchmarkParseIngest used 1.4×
// the CPU time of the sonic-only parse before CheckJSON with api, 1.03×
// with apiChecked.
var apiChecked = sonic.Config{CopyString: true, NoValidateJSONSkip: true}.Froze()

// ParseIngest parses one ingest line (without its newline).
func ParseIngest(line []byte) (Ingest, error) {
	var (
		j  ingestJSON
		in Ingest
	)
	// The raw data is spliced into text frames as is and merged into the
	// city state: it must be JSON that the merge and every client read the
	// same (CheckJSON), whatever sonic would let through. Then sonic only
	// picks the fields out of a checked line.
	if err := CheckJSON(line); err != nil {
		return in, fmt.Errorf("%w: %w", ErrIngest, err)
	}
	if err := apiChecked.Unmarshal(line, &j); err != nil {
		return in, explainIngest(line)
	}
	if !ValidCity(j.City) {
		return in, fmt.Errorf("%w: city %q must be 1-64 of a-z 0-9 - _", ErrIngest, j.City)
	}
	if len(j.ID) > MaxIDLen {
		return in, fmt.Errorf("%w: id longer than %d bytes", ErrIngest, MaxIDLen)
	}
	in.City, in.ID, in.Timestamp = j.City, j.ID, j.Timestamp
	switch j.Type {
	case "data_update", "snapshot":
		in.Kind = KindDataUpdate
		if j.Type == "snapshot" {
			in.Kind = KindSnapshot
		}
		if len(j.Data) == 0 || j.Data[0] != '{' {
			return in, fmt.Errorf("%w: %s needs \"data\" as a JSON object", ErrIngest, j.Type)
		}
		in.Data = j.Data
	case "alerts":
		in.Kind = KindAlerts
		var alerts []alertJSON
		if len(j.Alerts) == 0 || j.Alerts[0] != '[' || apiChecked.Unmarshal(j.Alerts, &alerts) != nil {
			return in, fmt.Errorf("%w: alerts needs \"alerts\" as an array of {severity, message}", ErrIngest)
		}
		if len(alerts) == 0 || len(alerts) > MaxAlertsPerMessage {
			return in, fmt.Errorf("%w: alerts needs 1 to %d alerts", ErrIngest, MaxAlertsPerMessage)
		}
		for _, a := range alerts {
			sev, ok := ParseSeverity(a.Severity)
			if !ok {
				return in, fmt.Errorf("%w: alert severity %q must be info, warning or critical", ErrIngest, a.Severity)
			}
			in.Severity = max(in.Severity, sev)
		}
		in.Alerts = j.Alerts
	case "":
		return in, fmt.Errorf("%w: missing \"type\"", ErrIngest)
	default:
		return in, fmt.Errorf("%w: unknown type %q (data_update, alerts, snapshot)", ErrIngest, j.Type)
	}
	return in, nil
}

// ingestFields are the members of an ingest line that must be of one type,
// what each must be, and a check that decodes a value as ingestJSON
// would: explainIngest names the first that does not fit.
var ingestFields = [...]struct {
	name, want string
	check      func([]byte) error
}{
	{"city", "a string", decodes[string]},
	{"type", "a string", decodes[string]},
	{"id", "a string", decodes[string]},
	{"timestamp", "an integer of Unix milliseconds", decodes[int64]},
}

// explainIngest says why a line CheckJSON accepted did not decode: it is
// not an object, or a member has the wrong type ("id":7,
// "timestamp":1.5). Only the error path pays for it.
func explainIngest(line []byte) error {
	wrong := -1
	err := EachMember(line, func(name string, val []byte) {
		for i, f := range ingestFields {
			// Names match as the decoder matches them: case-insensitively.
			if wrong < 0 && strings.EqualFold(name, f.name) && f.check(val) != nil {
				wrong = i
			}
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("%w: a line is a JSON object", ErrIngest)
	case wrong >= 0:
		f := ingestFields[wrong]
		return fmt.Errorf("%w: %q must be %s", ErrIngest, f.name, f.want)
	}
	return fmt.Errorf("%w: cannot parse JSON object", ErrIngest)
}

// ErrIngestAuth is wrapped by ParseIngestAuth's errors.
var ErrIngestAuth = errors.New("invalid ingest auth line")

// ParseIngestAuth parses a producer's first line when the ingest port
// requires a token: {"auth":"<token>"}. The token is a copy.
func ParseIngestAuth(line []byte) (string, error) {
	var j struct {
		Auth string `json:"auth"`
	}
	if !utf8.Valid(line) || api.Unmarshal(line, &j) != nil {
		return "", fmt.Errorf("%w: cannot parse JSON object", ErrIngestAuth)
	}
	if j.Auth == "" {
		return "", fmt.Errorf("%w: the first line must be {\"auth\":\"<token>\"}", ErrIngestAuth)
	}
	return j.Auth, nil
}
