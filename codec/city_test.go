package codec

import (
	"strings"
	"testing"
)

func TestValidCity(t *testing.T) {
	f := func(name string, want bool) {
		t.Helper()
		if got := ValidCity(name); got != want {
			t.Fatalf("ValidCity(%q) = %v, want %v", name, got, want)
		}
	}
	f("paris", true)
	f("new-york", true)
	f("sao_paulo", true)
	f("0", true)
	f("a-_9z", true)
	f(strings.Repeat("a", MaxCityLen), true)

	f("", false)
	f(strings.Repeat("a", MaxCityLen+1), false)
	f("Paris", false)
	f("new york", false)
	f("são-paulo", false)
	f("a.b", false)
	f("a/b", false)
	f(`a"b`, false)
	f(`a\b`, false)
	f("a\x00", false)
	f("a:b", false)
	f("a,b", false)
	f("\xff", false)
}
