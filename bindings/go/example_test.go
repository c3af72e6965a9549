package packkv_test

import (
	"errors"
	"fmt"
	"math"

	packkv "github.com/packkv/libpackkv/bindings/go"
)

// Example compresses 500 synthetic tokens on the CPU backend, runs one decode step for 9
// query heads (GQA over 3 KV heads) and shows an error checked with errors.Is.
func Example() {
	p, err := packkv.DefaultParams()
	if err != nil {
		panic(err)
	}
	p.NKVHeads, p.HeadDim = 3, 64
	cache, err := packkv.New(p)
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	const n = 500
	k := make(packkv.F32, n*3*64)
	v := make(packkv.F32, n*3*64)
	for i := range k {
		k[i] = float32(math.Sin(0.01 * float64(i)))
		v[i] = float32(math.Cos(0.02 * float64(i)))
	}
	if err := cache.Append([]int32{0}, []int32{n}, k, v); err != nil {
		panic(err)
	}
	q := make(packkv.F32, 9*64)
	out := make([]float32, 9*64)
	if err := cache.Decode([]int32{0}, 9, q, 0.125, out, nil); err != nil {
		panic(err)
	}
	st, _ := cache.Stats(-1)
	fmt.Println("tokens:", st.NTokens, "compressed:", st.NCompressedTokens, "smaller than fp16:", st.Ratio() > 1)

	_, err = cache.SeqLength(7)
	fmt.Println("invalid argument:", errors.Is(err, packkv.ErrInvalidArgument))
	// Output:
	// tokens: 500 compressed: 384 smaller than fp16: true
	// invalid argument: true
}
