package codec

// MaxCityLen is the longest accepted city id.
const MaxCityLen = 64

// ValidCity reports whether name is an acceptable city id: 1 to 64 bytes of
// lower-case ASCII letters, digits, '-' and '_'. City ids appear unescaped in
// pre-encoded frames and in metric labels, so the charset is deliberately
// narrow.
func ValidCity(name string) bool {
	if len(name) == 0 || len(name) > MaxCityLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
