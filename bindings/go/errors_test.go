package packkv_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	packkv "github.com/packkv/libpackkv/bindings/go"
)

// expect checks that err is a *packkv.Error matching sentinel with errors.Is, carrying a
// message that contains fragment.
func expect(t *testing.T, err error, sentinel error, fragment string) *packkv.Error {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	var pe *packkv.Error
	if !errors.As(err, &pe) {
		t.Fatalf("%v is not a *packkv.Error", err)
	}
	if !strings.Contains(pe.Msg, fragment) {
		t.Fatalf("message %q lacks %q", pe.Msg, fragment)
	}
	return pe
}

func TestSentinelsAndStatusNames(t *testing.T) {
	sentinels := []*packkv.Error{packkv.ErrInvalidArgument, packkv.ErrInvalidState, packkv.ErrCapacityExceeded,
		packkv.ErrWorkspaceTooSmall, packkv.ErrOutOfHostMemory, packkv.ErrOutOfDeviceMemory, packkv.ErrCUDA,
		packkv.ErrNotSupported, packkv.ErrVersionMismatch, packkv.ErrInternal}
	for i, s := range sentinels {
		if int(s.Code) != i+1 || !strings.HasPrefix(s.Code.String(), "PACKKV_ERR_") {
			t.Fatalf("sentinel %d: %v", i, s)
		}
		wrapped := fmt.Errorf("layer 3: %w", &packkv.Error{Code: s.Code, Msg: "detail"})
		for j, o := range sentinels {
			if errors.Is(wrapped, o) != (i == j) {
				t.Fatalf("errors.Is(%v, %v) wrong", wrapped, o)
			}
		}
	}
	if packkv.StatusOK.String() != "PACKKV_OK" || packkv.Status(99).String() != "unknown status" {
		t.Fatal("status names")
	}
	unknown := &packkv.Error{Code: 99, Msg: "future"}
	if errors.Is(unknown, packkv.ErrInternal) || unknown.Error() != "unknown status (99): future" {
		t.Fatalf("unknown status: %v", unknown)
	}
}

func TestInvalidArgumentFromC(t *testing.T) {
	p, _ := packkv.DefaultParams()
	p.NKVHeads, p.HeadDim = nKV, 40
	_, err := packkv.New(p)
	e := expect(t, err, packkv.ErrInvalidArgument, "head_dim")
	if !strings.Contains(e.Msg, "packkv_cache_create") || e.Code != packkv.StatusInvalidArgument {
		t.Fatalf("%v", e)
	}
	c := newCache(t, 1, nil)
	_, err = c.SeqLength(3)
	expect(t, err, packkv.ErrInvalidArgument, "seq_id")
	expect(t, c.RemoveSeq(-4), packkv.ErrInvalidArgument, "seq_id")
	_, err = c.Stats(5)
	expect(t, err, packkv.ErrInvalidArgument, "")
	r := rng(9)
	k := kv(&r, 10)
	k[77] = float32(math.NaN())
	expect(t, c.Append([]int32{0}, []int32{10}, packkv.F32(k), packkv.F32(k)), packkv.ErrInvalidArgument, "")
	if n, _ := c.SeqLength(0); n != 0 {
		t.Fatal("a failed append appended tokens")
	}
	k = kv(&r, 10)
	if err := c.Append([]int32{0}, []int32{10}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	q := make([]float32, 4*headDim)
	expect(t, c.Decode([]int32{0}, 4, packkv.F32(q), 0.1, make([]float32, 4*headDim), nil), packkv.ErrInvalidArgument, "packkv_attn_decode: n_q_heads")
	q = make([]float32, 3*headDim)
	expect(t, c.Decode([]int32{0}, 3, packkv.F32(q), -1, make([]float32, 3*headDim), nil), packkv.ErrInvalidArgument, "scale")
	expect(t, c.Scores([]int32{0}, 3, packkv.F32(q), make([]float32, 15), 5), packkv.ErrInvalidArgument, "ld_scores")
	_, err = c.WorkspaceSize(0, 3)
	expect(t, err, packkv.ErrInvalidArgument, "n_seqs")
	_, err = packkv.BitsForRelScale(2)
	expect(t, err, packkv.ErrInvalidArgument, "packkv_bits_for_rel_scale")
}

func TestCapacityExceeded(t *testing.T) {
	c := newCache(t, 1, func(p *packkv.Params) { p.MaxTokensPerSeq = 50 })
	r := rng(10)
	k := kv(&r, 40)
	if err := c.Append([]int32{0}, []int32{40}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	err := c.Append([]int32{0}, []int32{40}, packkv.F32(k), packkv.F32(k))
	if e := expect(t, err, packkv.ErrCapacityExceeded, ""); e.Msg == "" {
		t.Fatal("no message")
	}
	_, err = c.Decompress(0, make([]float32, 10*nKV*headDim), nil)
	expect(t, err, packkv.ErrCapacityExceeded, "")
}

func TestNotSupportedWithoutCUDA(t *testing.T) {
	if packkv.HasCUDA() {
		t.Skip("a CUDA device is present")
	}
	p, _ := packkv.DefaultParams()
	p.NKVHeads, p.HeadDim, p.Device = nKV, headDim, 0
	_, err := packkv.New(p)
	expect(t, err, packkv.ErrNotSupported, "CUDA")
}

func TestErrorsDetectedInGo(t *testing.T) {
	c := newCache(t, 2, nil)
	k := make([]float32, 5*nKV*headDim)
	expect(t, c.Append([]int32{0}, []int32{4}, packkv.F32(k), packkv.F32(k)), packkv.ErrInvalidArgument, "expected")
	expect(t, c.Append([]int32{0, 1}, []int32{5}, packkv.F32(k), packkv.F32(k)), packkv.ErrInvalidArgument, "nTokens")
	expect(t, c.Append([]int32{0}, []int32{-5}, packkv.F32(k), packkv.F32(k)), packkv.ErrInvalidArgument, ">= 0")
	expect(t, c.Append([]int32{0}, []int32{5}, packkv.F32(k), packkv.F16(make([]uint16, len(k)))), packkv.ErrInvalidArgument, "element types")
	q := make([]float32, 9*headDim)
	expect(t, c.Decode([]int32{0}, 9, packkv.F32(q), 0.1, make([]float32, 9), nil), packkv.ErrInvalidArgument, "out")
	expect(t, c.Decode([]int32{0}, 9, packkv.F32(q), 0.1, make([]float32, 9*headDim), make([]float32, 2)), packkv.ErrInvalidArgument, "lse")
	expect(t, c.Decode([]int32{0}, 9, packkv.F32(q[1:]), 0.1, make([]float32, 9*headDim), nil), packkv.ErrInvalidArgument, "q has")
	expect(t, c.Decode(nil, 9, packkv.F32(q), 0.1, nil, nil), packkv.ErrInvalidArgument, "seq id")
	expect(t, c.Scores([]int32{0}, 9, packkv.F32(q), make([]float32, 10), 5), packkv.ErrInvalidArgument, "scores")
	expect(t, c.Apply([]int32{0}, 9, make([]float32, 10), 5, make([]float32, 9*headDim)), packkv.ErrInvalidArgument, "probs")
	expect(t, c.AppendDevice(nil, nil, 0, 0, packkv.DTypeF16, 0), packkv.ErrInvalidArgument, "")
	// Empty id and count slices: an error, not an index-out-of-range panic.
	expect(t, c.Append(nil, nil, packkv.F32(nil), packkv.F32(nil)), packkv.ErrInvalidArgument, "at least one")
	expect(t, c.Append([]int32{}, []int32{}, packkv.F32(k[:0]), packkv.F32(k[:0])), packkv.ErrInvalidArgument, "at least one")
}

func TestDeviceEntryPointsAndLastError(t *testing.T) {
	c := newCache(t, 1, nil)
	// A device call with a NULL address fails in C like any other; the message comes back
	// through the shim even though this goroutine may change threads.
	err := c.DecodeDevice([]int32{0}, 3, 0, packkv.DTypeF32, 0.1, 0, 0, 0, 0, 0)
	expect(t, err, packkv.ErrInvalidArgument, "")
	err = c.ScoresDevice([]int32{0}, 3, 0, packkv.DTypeF32, 0, 1, 0, 0, 0)
	expect(t, err, packkv.ErrInvalidArgument, "")
	err = c.ApplyDevice([]int32{0}, 3, 0, 1, 0, 0, 0, 0)
	expect(t, err, packkv.ErrInvalidArgument, "")
	if err := c.DecompressDevice(0, 0, 0, 0, 0); err != nil {
		t.Fatalf("decompressing an empty sequence into nothing: %v", err)
	}
	// The raw last-error functions report the calling OS thread.
	buf := make([]byte, 8)
	_ = packkv.CopyLastError(buf)
	_ = packkv.LastErrorMessage()
	_ = packkv.CopyLastError(nil)
}

func TestMessagesFollowTheirGoroutine(t *testing.T) {
	c := newCache(t, 1, nil)
	var wg sync.WaitGroup
	for _, id := range []int32{11, 22, 33, 44, 55, 66, 77, 88} {
		wg.Add(1)
		go func(id int32) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				_, err := c.SeqLength(id)
				var pe *packkv.Error
				if !errors.As(err, &pe) || !strings.Contains(pe.Msg, fmt.Sprint(id)) {
					t.Errorf("seq %d: %v", id, err)
					return
				}
			}
		}(id)
	}
	wg.Wait()
}

// A nil *Cache closes like a closed one (it panicked before).
func TestCloseNilCache(t *testing.T) {
	var c *packkv.Cache
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// A nil *Pool closes like a closed one, as a nil *Cache does.
func TestCloseNilPool(t *testing.T) {
	var p *packkv.Pool
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
