module github.com/packkv/libpackkv/examples/go

go 1.19

require github.com/packkv/libpackkv/bindings/go v0.0.0

replace github.com/packkv/libpackkv/bindings/go => ../../bindings/go
