//go:build !packkv_static

package packkv

// Default: link the shared libpackkv found by pkg-config.

// #cgo pkg-config: packkv
import "C"
