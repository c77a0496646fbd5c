// Package boxcarwm is Boxcar's Watermill adapter.
package boxcarwm
