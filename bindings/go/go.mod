module github.com/packkv/libpackkv/bindings/go

go 1.19
