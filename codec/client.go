package codec

import (
	"errors"
	"fmt"
	"strings"
)

// Client message types (client → server).
const (
	TypeAuth        = "auth"
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypePing        = "ping"
	TypeRefresh     = "refresh"
)

// Severity orders alert severities; the zero value means "no alert".
type Severity uint8

// Severities, lowest first.
const (
	SeverityNone Severity = iota
	SeverityInfo
	SeverityWarning
	SeverityCritical
)

// ParseSeverity maps a severity name to its level.
func ParseSeverity(s string) (Severity, bool) {
	switch s {
	case "info":
		return SeverityInfo, true
	case "warning":
		return SeverityWarning, true
	case "critical":
		return SeverityCritical, true
	}
	return SeverityNone, false
}

// Kind is the type of a city message, as a bit so that filters are masks.
type Kind uint8

// City message kinds.
const (
	KindDataUpdate Kind = 1 << iota
	KindAlerts
	KindSnapshot

	KindAll = KindDataUpdate | KindAlerts | KindSnapshot
)

// Filter selects the city messages a subscription receives. The zero value
// lets everything through.
type Filter struct {
	Kinds       Kind // 0 means all kinds
	MinSeverity Severity
}

// Pass reports whether a message of kind k with highest alert severity sev
// passes the filter. Snapshots always pass: they replace the client's state.
func (f Filter) Pass(k Kind, sev Severity) bool {
	if k == KindSnapshot {
		return true
	}
	if f.Kinds != 0 && f.Kinds&k == 0 {
		return false
	}
	return k != KindAlerts || sev >= f.MinSeverity
}

// ClientMessage is a parsed client → server message.
type ClientMessage struct {
	Type   string
	Token  string
	Cities []string
	// Since maps a city to the last seq the client has seen.
	Since map[string]uint64
	// Epoch is the node epoch the Since positions come from; 0 if unknown.
	Epoch uint64
	// Filter is set when HasFilter is true.
	Filter    Filter
	HasFilter bool
	// Presence asks for the cities' watchers (subscribe only).
	Presence bool
}

type clientJSON struct {
	Type     string            `json:"type"`
	Token    string            `json:"token"`
	CityID   string            `json:"cityId"`
	Cities   []string          `json:"cities"`
	Since    map[string]uint64 `json:"since"`
	Epoch    uint64            `json:"epoch"`
	Presence bool              `json:"presence"`
	Filters  *filtersJSON      `json:"filters"`
}

type filtersJSON struct {
	Types       []string `json:"types"`
	MinSeverity string   `json:"minSeverity"`
}

// clientFields are clientJSON's members, what each must be, and a check
// that decodes a value as clientJSON would: explain names the first that
// does not fit.
var clientFields = [...]struct {
	name, want string
	check      func([]byte) error
}{
	{"type", "a string", decodes[string]},
	{"token", "a string", decodes[string]},
	{"cityId", "a string", decodes[string]},
	{"cities", "an array of city names", decodes[[]string]},
	{"since", "an object of city: seq (an integer ≥ 0)", decodes[map[string]uint64]},
	{"epoch", "an integer ≥ 0", decodes[uint64]},
	{"presence", "true or false", decodes[bool]},
	{"filters", `an object {"types":[…],"minSeverity":"…"}`, decodes[filtersJSON]},
}

func decodes[T any](b []byte) error {
	var v T
	return api.Unmarshal(b, &v)
}

// explain says why a client message that did not decode is refused: JSON
// that is not an object, or an object with a member of the wrong type
// ("cities":"nairobi"), is a bad_request that says what is wrong; what is
// not JSON is bad_json. Only the error path pays for it.
func explain(b []byte) error {
	notJSON := fmt.Errorf("%w: cannot parse message as JSON object", ErrBadJSON)
	if CheckJSON(b) != nil {
		return notJSON
	}
	wrong := -1
	err := EachMember(b, func(name string, val []byte) {
		for i, f := range clientFields {
			// Names match as the decoder matches them: case-insensitively.
			if wrong < 0 && strings.EqualFold(name, f.name) && f.check(val) != nil {
				wrong = i
			}
		}
	})
	switch {
	case err != nil: // JSON, but not an object
		return fmt.Errorf("%w: a message is a JSON object", ErrBadRequest)
	case wrong >= 0:
		f := clientFields[wrong]
		return fmt.Errorf("%w: %q must be %s", ErrBadRequest, f.name, f.want)
	}
	return notJSON
}

// filterKind returns the kind a filter's types entry names.
func filterKind(name string) (Kind, bool) {
	switch name {
	case "data_update":
		return KindDataUpdate, true
	case "alerts":
		return KindAlerts, true
	case "snapshot", "initial_data":
		return KindSnapshot, true
	}
	return 0, false
}

// MaxCitiesPerMessage bounds the cities one subscribe message may name.
const MaxCitiesPerMessage = 256

// Errors a client message can earn; the gateway sends the code back in an
// error message and keeps the connection.
var (
	ErrBadJSON     = errors.New("bad_json")
	ErrUnknownType = errors.New("unknown_type")
	ErrBadRequest  = errors.New("bad_request")
)

// ParseClientMessage parses one client text message. The error wraps
// ErrBadJSON, ErrUnknownType or ErrBadRequest; its text is fit to send back.
func ParseClientMessage(b []byte) (ClientMessage, error) {
	var (
		j clientJSON
		m ClientMessage
	)
	if err := api.Unmarshal(b, &j); err != nil {
		return m, explain(b)
	}
	m.Type, m.Token, m.Since, m.Epoch = j.Type, j.Token, j.Since, j.Epoch
	switch j.Type {
	case TypePing:
		return m, nil
	case TypeAuth:
		if j.CityID != "" {
			m.Cities = []string{j.CityID}
		}
	case TypeRefresh:
		if j.Token == "" {
			return m, fmt.Errorf("%w: refresh needs a token", ErrBadRequest)
		}
		return m, nil
	case TypeSubscribe:
		m.Cities, m.Presence = j.Cities, j.Presence
	case TypeUnsubscribe:
		m.Cities = j.Cities
	case "":
		return m, fmt.Errorf("%w: missing \"type\"", ErrBadRequest)
	default:
		return m, fmt.Errorf("%w: %q", ErrUnknownType, j.Type)
	}
	if len(m.Cities) > MaxCitiesPerMessage {
		return m, fmt.Errorf("%w: more than %d cities", ErrBadRequest, MaxCitiesPerMessage)
	}
	for _, c := range m.Cities {
		if !ValidCity(c) {
			return m, fmt.Errorf("%w: invalid city %q (1-64 of a-z 0-9 - _)", ErrBadRequest, c)
		}
	}
	for c := range m.Since {
		if !ValidCity(c) {
			return m, fmt.Errorf("%w: invalid city %q in since", ErrBadRequest, c)
		}
	}
	if j.Filters != nil {
		m.HasFilter = true
		for _, t := range j.Filters.Types {
			k, ok := filterKind(t)
			if !ok {
				return m, fmt.Errorf("%w: unknown filter type %q", ErrBadRequest, t)
			}
			m.Filter.Kinds |= k
		}
		if s := j.Filters.MinSeverity; s != "" {
			sev, ok := ParseSeverity(s)
			if !ok {
				return m, fmt.Errorf("%w: unknown minSeverity %q (info, warning, critical)", ErrBadRequest, s)
			}
			m.Filter.MinSeverity = sev
		}
	}
	return m, nil
}
