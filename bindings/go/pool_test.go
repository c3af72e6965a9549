package packkv_test

import (
	"errors"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unsafe"

	packkv "github.com/packkv/libpackkv/bindings/go"
)

// Pools, truncate and fork (experimental API).

// defaultParams: the library's defaults with the tests' reference configuration stated
// (refParams) and this file's shape.
func defaultParams(t *testing.T, maxSeqs int32) packkv.Params {
	t.Helper()
	p, err := packkv.DefaultParams()
	if err != nil {
		t.Fatal(err)
	}
	refParams(&p)
	p.NKVHeads, p.HeadDim, p.MaxSeqs = nKV, headDim, maxSeqs
	return p
}

func contents(t *testing.T, c *packkv.Cache, seq int32) ([]float32, []float32) {
	t.Helper()
	n, err := c.SeqLength(seq)
	if err != nil {
		t.Fatal(err)
	}
	k, v := make([]float32, n*nKV*headDim), make([]float32, n*nKV*headDim)
	if _, err := c.Decompress(seq, k, v); err != nil {
		t.Fatal(err)
	}
	return k, v
}

type cacheState struct {
	all  packkv.Stats
	seqs []packkv.Stats
	data [][]float32
}

func stateOf(t *testing.T, c *packkv.Cache, nSeqs int32) cacheState {
	t.Helper()
	var s cacheState
	var err error
	if s.all, err = c.Stats(-1); err != nil {
		t.Fatal(err)
	}
	for i := int32(0); i < nSeqs; i++ {
		st, err := c.Stats(i)
		if err != nil {
			t.Fatal(err)
		}
		k, v := contents(t, c, i)
		s.seqs = append(s.seqs, st)
		s.data = append(s.data, k, v)
	}
	return s
}

func TestPoolBudgetExceeded(t *testing.T) {
	r := rng(11)
	row := nKV * headDim
	k, v := kv(&r, 3000), kv(&r, 3000)
	page := int64(16384)
	pool, err := packkv.NewPool(packkv.PoolOptions{PageBytes: page, BudgetBytes: 3 * page})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c, err := packkv.NewInPool(defaultParams(t, 1), pool)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := pool.TokensFit(); err != nil || n <= 0 {
		t.Fatalf("TokensFit = %d, %v", n, err)
	}
	failed := false
	for i := 0; i < 3000; i++ {
		before := stateOf(t, c, 1)
		ps, _ := pool.Stats()
		err := c.Append([]int32{0}, []int32{1}, packkv.F32(k[i*row:(i+1)*row]), packkv.F32(v[i*row:(i+1)*row]))
		if err == nil {
			continue
		}
		var pe *packkv.Error
		if !errors.Is(err, packkv.ErrBudgetExceeded) || !errors.As(err, &pe) {
			t.Fatalf("want ErrBudgetExceeded, got %v", err)
		}
		if pe.BytesNeeded != page || !strings.Contains(pe.Msg, "packkv_cache_append") {
			t.Fatalf("BytesNeeded %d, message %q", pe.BytesNeeded, pe.Msg)
		}
		if after := stateOf(t, c, 1); !reflect.DeepEqual(after, before) {
			t.Fatal("a failed append changed the cache")
		}
		if ps2, _ := pool.Stats(); ps2 != ps || ps2.FreeBytes != 0 {
			t.Fatalf("pool changed or not full: %+v vs %+v", ps2, ps)
		}
		failed = true
		break
	}
	if !failed {
		t.Fatal("the budget never ran out")
	}
	if err := c.Truncate(0, 64); err != nil {
		t.Fatal(err)
	}
	if err := c.Append([]int32{0}, []int32{1}, packkv.F32(k[:row]), packkv.F32(v[:row])); err != nil {
		t.Fatal(err)
	}
}

func TestTruncateForkMatchFreshCaches(t *testing.T) {
	r := rng(12)
	row := nKV * headDim
	k, v := kv(&r, 1200), kv(&r, 1200)
	pool, err := packkv.NewPool(packkv.PoolOptions{PageBytes: 65536})
	if err != nil {
		t.Fatal(err)
	}
	c, err := packkv.NewInPool(defaultParams(t, 2), pool)
	pool.Close() // the cache keeps the pool alive
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Append([]int32{0}, []int32{1000}, packkv.F32(k[:1000*row]), packkv.F32(v[:1000*row])); err != nil {
		t.Fatal(err)
	}
	if err := c.Truncate(0, 640); err != nil {
		t.Fatal(err)
	}
	if err := c.Fork(0, 1); err != nil {
		t.Fatal(err)
	}
	all, _ := c.Stats(-1)
	one, _ := c.Stats(1)
	if all.NBlocks != one.NBlocks || all.CompressedBytesUsed != one.CompressedBytesUsed {
		t.Fatalf("shared blocks counted twice: %+v vs %+v", all, one)
	}
	if err := c.Append([]int32{1}, []int32{200}, packkv.F32(k[1000*row:]), packkv.F32(v[1000*row:])); err != nil {
		t.Fatal(err)
	}
	ref := newCache(t, 1, nil)
	ref.Append([]int32{0}, []int32{640}, packkv.F32(k[:640*row]), packkv.F32(v[:640*row]))
	ref.Append([]int32{0}, []int32{200}, packkv.F32(k[1000*row:]), packkv.F32(v[1000*row:]))
	gk, gv := contents(t, c, 1)
	wk, wv := contents(t, ref, 0)
	if !reflect.DeepEqual(gk, wk) || !reflect.DeepEqual(gv, wv) {
		t.Fatal("fork + append differs from a fresh sequence")
	}
	before := stateOf(t, c, 2)
	if err := c.Truncate(0, 641); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("truncate past the end: %v", err)
	}
	if err := c.Fork(0, 1); !errors.Is(err, packkv.ErrInvalidState) {
		t.Fatalf("fork into a non-empty sequence: %v", err)
	}
	if err := c.Fork(1, 1); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("fork onto itself: %v", err)
	}
	if !reflect.DeepEqual(stateOf(t, c, 2), before) {
		t.Fatal("a failed call changed the cache")
	}
}

func TestPoolArgumentsAndThreads(t *testing.T) {
	if _, err := packkv.NewPool(packkv.PoolOptions{PageBytes: 5000}); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("page size 5000: %v", err)
	}
	if _, err := packkv.NewPool(packkv.PoolOptions{Reserve: true}); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("reserve without budget: %v", err)
	}
	big := defaultParams(t, 1)
	big.NKVHeads, big.HeadDim = 8, 128
	if n, err := packkv.PageBytesFor(big); err != nil || n != packkv.DefaultPageBytes {
		t.Fatalf("PageBytesFor = %d, %v", n, err)
	}
	small, _ := packkv.NewPool(packkv.PoolOptions{PageBytes: 4096})
	if _, err := packkv.NewInPool(big, small); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("pages too small: %v", err)
	}
	small.Close()
	if _, err := packkv.NewInPool(big, small); !errors.Is(err, packkv.ErrInvalidState) {
		t.Fatalf("closed pool: %v", err)
	}
	pool, _ := packkv.NewPool(packkv.PoolOptions{PageBytes: 16384, BudgetBytes: 64 * 16384, Reserve: true})
	defer pool.Close()
	r := rng(13)
	k := kv(&r, 1000)
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := packkv.NewInPool(defaultParams(t, 1), pool)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; i < 1000; i += 10 {
				if err := c.Append([]int32{0}, []int32{10}, packkv.F32(k[i*nKV*headDim:(i+10)*nKV*headDim]),
					packkv.F32(k[i*nKV*headDim:(i+10)*nKV*headDim])); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s, _ := pool.Stats()
	if s.BytesInUse != 0 || s.BytesHeld != 64*16384 || s.NCaches != 0 {
		t.Fatalf("after the caches closed: %+v", s)
	}
}

func TestSlidingWindow(t *testing.T) {
	r := rng(14)
	row := nKV * headDim
	k, v := kv(&r, 1500), kv(&r, 1500)
	c := newCache(t, 1, nil)
	ref := newCache(t, 1, nil)
	if err := c.SetWindow(200); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1500; i += 100 {
		kk, vv := packkv.F32(k[i*row:(i+100)*row]), packkv.F32(v[i*row:(i+100)*row])
		if err := c.Append([]int32{0}, []int32{100}, kk, vv); err != nil {
			t.Fatal(err)
		}
		ref.Append([]int32{0}, []int32{100}, kk, vv)
	}
	if s, err := c.WindowStart(0); err != nil || s != 1300 {
		t.Fatalf("WindowStart = %d, %v", s, err)
	}
	gk, _ := contents(t, c, 0)
	wk, _ := contents(t, ref, 0)
	for i := range gk {
		if i < 1300*row && !math.IsNaN(float64(gk[i])) || i >= 1300*row && gk[i] != wk[i] {
			t.Fatalf("decompress at %d: %v vs %v", i, gk[i], wk[i])
		}
	}
	if err := c.SetWindow(5); !errors.Is(err, packkv.ErrInvalidState) {
		t.Fatalf("SetWindow on a non-empty cache: %v", err)
	}
	if err := c.Truncate(0, 1299); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("Truncate before the window: %v", err)
	}
}

func TestExportImport(t *testing.T) {
	r := rng(15)
	row := nKV * headDim
	k := kv(&r, 700)
	a := newCache(t, 1, nil)
	if err := a.Append([]int32{0}, []int32{700}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	data, err := a.ExportSeq(0)
	if err != nil || string(data[:8]) != "PACKKVSQ" {
		t.Fatalf("ExportSeq: %v", err)
	}
	b := newCache(t, 2, nil)
	if err := b.ImportSeq(1, data); err != nil {
		t.Fatal(err)
	}
	ak, av := contents(t, a, 0)
	bk, bv := contents(t, b, 1)
	if !reflect.DeepEqual(ak, bk) || !reflect.DeepEqual(av, bv) || len(ak) != 700*row {
		t.Fatal("import differs from the exported sequence")
	}
	before := stateOf(t, b, 2)
	if err := b.ImportSeq(0, data[:len(data)-1]); !errors.Is(err, packkv.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated: %v", err)
	}
	bad := append([]byte(nil), data...)
	bad[8] = 9
	if err := b.ImportSeq(0, bad); !errors.Is(err, packkv.ErrVersionMismatch) {
		t.Fatalf("version: %v", err)
	}
	if err := b.ImportSeq(1, data); !errors.Is(err, packkv.ErrInvalidState) {
		t.Fatalf("non-empty: %v", err)
	}
	if !reflect.DeepEqual(stateOf(t, b, 2), before) {
		t.Fatal("a failed import changed the cache")
	}
}

func TestEveryExperimentalFunctionIsWrapped(t *testing.T) {
	header, err := os.ReadFile("../../include/packkv/packkv_experimental.h")
	if err != nil {
		t.Skip("not inside a libpackkv checkout:", err)
	}
	src, err := os.ReadFile("shims.c")
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := os.ReadFile("pool.go")
	names := regexp.MustCompile(`(?m)^PACKKV_API[^(]*?\b(packkv_x_\w+)\s*\(`).FindAllSubmatch(header, -1)
	if len(names) < 10 {
		t.Fatalf("found only %d experimental C functions", len(names))
	}
	for _, m := range names {
		name := string(m[1])
		if !strings.Contains(string(src), name+"(") && !strings.Contains(string(pool), "C."+name+"(") {
			t.Errorf("experimental C function %s is not reachable from Go", name)
		}
	}
}

func TestNThreadsAndSetParallel(t *testing.T) {
	r := rng(15)
	row := nKV * headDim
	const n = 3000
	k, v := kv(&r, n), kv(&r, n)
	q := kv(&r, 2)[:2*nKV*headDim]
	var outs [][]float32
	for _, threads := range []int32{1, 3, 0} {
		p := defaultParams(t, 1)
		p.NThreads, p.MaxTokensPerSeq = threads, 4096
		c, err := packkv.New(p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.Params(); got.NThreads != threads {
			t.Fatalf("NThreads = %d, want %d", got.NThreads, threads)
		}
		if err := c.Append([]int32{0}, []int32{n}, packkv.F32(k[:n*row]), packkv.F32(v[:n*row])); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, 2*nKV*headDim)
		if err := c.Decode([]int32{0}, 2*nKV, packkv.F32(q), 0.125, out, nil); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
		if err := c.SetParallel(nil, nil, 0); err != nil { // the library's threads: always valid
			t.Fatal(err)
		}
		if err := c.SetParallel(unsafe.Pointer(&out[0]), nil, 0); !errors.Is(err, packkv.ErrInvalidArgument) {
			t.Fatalf("SetParallel with n_tasks 0: %v", err)
		}
	}
	for _, o := range outs[1:] {
		if !reflect.DeepEqual(o, outs[0]) {
			t.Fatal("results depend on NThreads")
		}
	}
	p := defaultParams(t, 1)
	p.NThreads = -1
	if _, err := packkv.New(p); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("NThreads -1: %v", err)
	}
}
