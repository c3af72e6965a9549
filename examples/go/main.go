// Command compress-sample compresses one layer of the real SmolLM2-135M KV sample with
// libpackkv and prints the compression ratio (fp16 bytes / all-in bytes, where all-in =
// compressed_bytes_used + residual_bytes).
//
// Usage: go run . [path/to/smollm2_kv_sample.safetensors] [layer]   (default layer 15)
//
// The safetensors file is read with the standard library: an 8-byte little-endian header
// length, a JSON header {name: {"dtype", "shape", "data_offsets"}}, then the tensor bytes.
// Linking: PKG_CONFIG_PATH must point at a packkv.pc (install tree or
// <build>/bindings/pkgconfig).
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	packkv "github.com/packkv/libpackkv/bindings/go"
)

type tensorInfo struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// readF16 returns the F16 tensor `name` (bits) and its shape.
func readF16(file []byte, header map[string]json.RawMessage, dataStart int64, name string) (packkv.F16, []int, error) {
	raw, ok := header[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	var info tensorInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if info.DType != "F16" {
		return nil, nil, fmt.Errorf("%s: dtype %s, expected F16", name, info.DType)
	}
	a, b := dataStart+info.DataOffsets[0], dataStart+info.DataOffsets[1]
	if a < dataStart || b > int64(len(file)) || a > b || (b-a)%2 != 0 {
		return nil, nil, fmt.Errorf("%s: bad data offsets", name)
	}
	out := make(packkv.F16, (b-a)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(file[a+int64(2*i):])
	}
	return out, info.Shape, nil
}

func run() error {
	path := "../../data/smollm2_kv_sample.safetensors"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	layer := 15
	if len(os.Args) > 2 {
		var err error
		if layer, err = strconv.Atoi(os.Args[2]); err != nil {
			return fmt.Errorf("bad layer %q", os.Args[2])
		}
	}
	file, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(file) < 8 {
		return fmt.Errorf("%s: too short", path)
	}
	n := int64(binary.LittleEndian.Uint64(file[:8]))
	if n > int64(len(file))-8 {
		return fmt.Errorf("%s: header out of the file", path)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(file[8:8+n], &header); err != nil {
		return fmt.Errorf("%s: header: %w", path, err)
	}
	k, shape, err := readF16(file, header, 8+n, fmt.Sprintf("layer.%d.k", layer))
	if err != nil {
		return err
	}
	v, _, err := readF16(file, header, 8+n, fmt.Sprintf("layer.%d.v", layer))
	if err != nil {
		return err
	}
	if len(shape) != 3 {
		return fmt.Errorf("unexpected K shape %v", shape)
	}
	fmt.Printf("libpackkv %s: layer %d, K/V F16 %v\n", packkv.VersionString(), layer, shape)

	p, err := packkv.DefaultParams()
	if err != nil {
		return err
	}
	p.Device, p.NKVHeads, p.HeadDim = -1, int32(shape[1]), int32(shape[2])
	cache, err := packkv.New(p)
	if err != nil {
		return err
	}
	defer cache.Close()
	if err := cache.Append([]int32{0}, []int32{int32(shape[0])}, k, v); err != nil {
		return err
	}
	st, err := cache.Stats(-1)
	if err != nil {
		return err
	}
	fmt.Printf("tokens %d (compressed %d, residual %d), bits K/V %d/%d\n", st.NTokens,
		st.NCompressedTokens, st.NResidualTokens, cache.Params().BitsK, cache.Params().BitsV)
	fmt.Printf("fp16 %d bytes, all-in %d bytes (compressed %d + residual %d)\n", st.FP16Bytes,
		st.AllInBytes(), st.CompressedBytesUsed, st.ResidualBytes)
	fmt.Printf("ratio %.2fx\n", st.Ratio())
	if st.Ratio() <= 1 {
		return fmt.Errorf("no compression")
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compress-sample:", err)
		os.Exit(1)
	}
}
