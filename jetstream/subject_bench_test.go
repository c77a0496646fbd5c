package jetstream

import "testing"

// Keys as applications use them: plain IDs stay as they are, anything else
// is base64url-encoded into one token.
var benchKeys = []struct{ name, key string }{
	{"plain", "customer-123456"},
	{"email", "alice.smith@example.com"},
	{"unicode", "città/numéro 42 ✓"},
}

func BenchmarkEncodeKey(b *testing.B) {
	for _, k := range benchKeys {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = EncodeKey(k.key)
			}
		})
	}
}

func BenchmarkDecodeKey(b *testing.B) {
	for _, k := range benchKeys {
		tok := EncodeKey(k.key)
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeKey(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchLayout = Layout{Prefix: "boxcar", Partitions: 64}

// BenchmarkSubject is what the relay does per event; BenchmarkParseSubject
// what every subscriber does per message.
func BenchmarkSubject(b *testing.B) {
	for _, k := range benchKeys {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = benchLayout.Subject("main", "order.placed", k.key)
			}
		})
	}
}

func BenchmarkParseSubject(b *testing.B) {
	for _, k := range benchKeys {
		subject := benchLayout.Subject("main", "order.placed", k.key)
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := benchLayout.Parse(subject); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkValidateKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateKey("customer-123456"); err != nil {
			b.Fatal(err)
		}
	}
}
