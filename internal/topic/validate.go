package topic

import "errors"

// MaxLen is the longest topic name or filter in bytes: both travel as an
// MQTT UTF-8 string with a two-byte length prefix [MQTT-4.7.3-3].
const MaxLen = 65535

// Validation errors. They are sentinels so callers can map them to MQTT
// reason codes with errors.Is.
var (
	// ErrEmpty reports a zero-length topic name or filter [MQTT-4.7.3-1].
	ErrEmpty = errors.New("topic: empty topic name or filter")
	// ErrTooLong reports a topic name or filter longer than MaxLen bytes [MQTT-4.7.3-3].
	ErrTooLong = errors.New("topic: longer than 65535 bytes")
	// ErrNullChar reports a U+0000 character in a topic name or filter [MQTT-4.7.3-2].
	ErrNullChar = errors.New("topic: contains U+0000")
	// ErrWildcardInName reports a '+' or '#' in a topic name [MQTT-3.3.2-2] [MQTT-4.7.1-1].
	ErrWildcardInName = errors.New("topic: wildcard in topic name")
	// ErrMultiLevelWildcard reports a '#' that is not the whole last level of a filter [MQTT-4.7.1-2].
	ErrMultiLevelWildcard = errors.New("topic: '#' must be the whole last level")
	// ErrSingleLevelWildcard reports a '+' that does not fill a whole level of a filter [MQTT-4.7.1-3].
	ErrSingleLevelWildcard = errors.New("topic: '+' must be a whole level")
)

// ValidateName checks a PUBLISH topic name: non-empty ([MQTT-4.7.3-1]), no '+' or '#' ([MQTT-3.3.2-2],
// [MQTT-4.7.1-1]), no U+0000 ([MQTT-4.7.3-2]), at most MaxLen bytes ([MQTT-4.7.3-3]). UTF-8 validity
// is checked by the codec. It does not allocate.
func ValidateName(name []byte) error {
	if len(name) == 0 {
		return ErrEmpty // [MQTT-4.7.3-1]
	}
	if len(name) > MaxLen {
		return ErrTooLong // [MQTT-4.7.3-3]
	}
	for _, c := range name {
		switch c {
		case 0:
			// In valid UTF-8, U+0000 is only ever the single byte 0x00.
			return ErrNullChar // [MQTT-4.7.3-2]
		case '+', '#':
			return ErrWildcardInName // [MQTT-3.3.2-2] [MQTT-4.7.1-1]
		}
	}
	return nil
}

// ValidateFilter checks a subscription filter: non-empty ([MQTT-4.7.3-1]); '#' only as the whole last
// level ([MQTT-4.7.1-2]); '+' only as a whole level ([MQTT-4.7.1-3]); no U+0000 ([MQTT-4.7.3-2]); at
// most MaxLen bytes ([MQTT-4.7.3-3]). UTF-8 validity is checked by the codec. It does not allocate.
func ValidateFilter(filter string) error {
	if len(filter) == 0 {
		return ErrEmpty // [MQTT-4.7.3-1]
	}
	if len(filter) > MaxLen {
		return ErrTooLong // [MQTT-4.7.3-3]
	}
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case 0:
			return ErrNullChar // [MQTT-4.7.3-2]
		case '#':
			// '#' stands alone or right after '/', and nothing follows it.
			if i != len(filter)-1 || (i > 0 && filter[i-1] != '/') {
				return ErrMultiLevelWildcard // [MQTT-4.7.1-2]
			}
		case '+':
			// '+' is bounded by the ends of the filter or by '/' on both sides.
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return ErrSingleLevelWildcard // [MQTT-4.7.1-3]
			}
		}
	}
	return nil
}

// levelEnd returns the index of the '/' that ends the level starting at p, or
// len(s) for the last level. The next level starts at levelEnd+1; a start
// beyond len(s) means there are no more levels. This index arithmetic is what
// lets matching walk a name without splitting it into new slices.
func levelEnd[T string | []byte](s T, p int) int {
	for i := p; i < len(s); i++ {
		if s[i] == '/' {
			return i
		}
	}
	return len(s)
}

// Match reports whether a valid filter matches a valid topic name, with the '$' rule: a name starting
// with '$' is not matched by a filter whose first level is '+' or '#' ([MQTT-4.7.2-1]).
// "sport/#" matches "sport" (the '#' includes the parent level); "+" matches "" levels e.g. "/finance".
// Levels are compared byte for byte, with no normalisation ([MQTT-4.7.3-4]). It does not allocate.
func Match(filter string, name []byte) bool {
	if len(filter) == 0 || len(name) == 0 {
		return false // neither is valid [MQTT-4.7.3-1]
	}
	// In a valid filter a leading '+' or '#' is the whole first level.
	if name[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	fp, np := 0, 0
	for {
		fe := levelEnd(filter, fp)
		fl := filter[fp:fe]
		if fl == "#" {
			// '#' matches the parent level and any number of child levels,
			// including none [MQTT-4.7.1-2].
			return true
		}
		if np > len(name) {
			return false // the filter has levels left, the name has none
		}
		ne := levelEnd(name, np)
		if fl != "+" && fl != string(name[np:ne]) {
			return false
		}
		fp, np = fe+1, ne+1
		if fp > len(filter) {
			return np > len(name)
		}
	}
}
