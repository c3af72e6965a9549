package packkv_test

import (
	"errors"
	"math"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	packkv "github.com/packkv/libpackkv/bindings/go"
)

const (
	nKV     = 3
	headDim = 64
)

// rng is a small deterministic generator (xorshift64*).
type rng uint64

func (r *rng) uniform() float32 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return float32((x*0x2545F4914F6CDD1D)>>40)/float32(1<<24)*2 - 1
}

// kv returns K/V-like data [n][nKV][headDim] with per-token scale and offset.
func kv(r *rng, n int) []float32 {
	out := make([]float32, 0, n*nKV*headDim)
	for t := 0; t < n; t++ {
		scale, off := 1.5+r.uniform(), r.uniform()
		for i := 0; i < nKV*headDim; i++ {
			out = append(out, r.uniform()*scale+off)
		}
	}
	return out
}

// f16 rounds to IEEE binary16 (nearest even) and returns the bits; normal range only, as
// the test data needs.
func f16(x float32) uint16 {
	b := math.Float32bits(x)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	man := b & 0x7fffff
	if exp <= 0 {
		return sign
	}
	r := uint32(exp)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func f16to32(h uint16) float32 {
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	sign := uint32(h&0x8000) << 16
	if exp == 0 {
		v := float32(man) / (1 << 24)
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// refParams sets the tests' reference configuration, so that no test depends on the
// library's defaults (which follow measurements and change): r_K 0.1, r_V 0.2 (4- and
// 3-bit codes), residual window 128, no sink tokens.
func refParams(p *packkv.Params) {
	p.RelScaleK, p.RelScaleV, p.ResidualTokens, p.SinkTokens = 0.1, 0.2, 128, 0
}

func newCache(t *testing.T, maxSeqs int32, edit func(*packkv.Params)) *packkv.Cache {
	t.Helper()
	p, err := packkv.DefaultParams()
	if err != nil {
		t.Fatal(err)
	}
	refParams(&p)
	p.NKVHeads, p.HeadDim, p.MaxSeqs = nKV, headDim, maxSeqs
	if edit != nil {
		edit(&p)
	}
	c, err := packkv.New(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	return math.Sqrt(num / math.Max(den, 1e-300))
}

func TestVersionAndInfo(t *testing.T) {
	v := packkv.Version()
	want := strings.Join([]string{itoa(v / 10000), itoa(v / 100 % 100), itoa(v % 100)}, ".")
	if packkv.VersionString() != want {
		t.Fatalf("version %q vs %q", packkv.VersionString(), want)
	}
	if !strings.Contains(packkv.BuildInfo(), "libpackkv") {
		t.Fatalf("build info %q", packkv.BuildInfo())
	}
	if b, err := packkv.BitsForRelScale(0.1); err != nil || b != 4 {
		t.Fatalf("BitsForRelScale(0.1) = %d, %v", b, err)
	}
	_ = packkv.HasCUDA()
}

func itoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	s := ""
	for ; v > 0; v /= 10 {
		s = string(rune('0'+v%10)) + s
	}
	return s
}

func TestParams(t *testing.T) {
	p, err := packkv.DefaultParams()
	if err != nil {
		t.Fatal(err)
	}
	if p.Device != -1 || p.KVDType != packkv.DTypeF16 || p.Repack != packkv.RepackMedian ||
		p.ScaleGranularity != packkv.ScalePerToken || p.RelScaleK != 0.035 || p.RelScaleV != 0.07 ||
		p.ResidualTokens != 64 || p.SinkTokens != 4 || p.KTransform != packkv.KTransformNone {
		t.Fatalf("defaults %+v", p)
	}
	c := newCache(t, 2, func(p *packkv.Params) { p.RelScaleK = 0.05 })
	eff := c.Params()
	if eff.MaxSeqs != 2 || eff.BitsK != 5 || c.Device() != -1 {
		t.Fatalf("effective %+v", eff)
	}
	if got, err := c.GetParams(); err != nil || got != eff {
		t.Fatalf("GetParams %+v %v", got, err)
	}
	if d, err := c.GetDevice(); err != nil || d != -1 {
		t.Fatalf("GetDevice %d %v", d, err)
	}
}

func TestVersion2Params(t *testing.T) {
	c := newCache(t, 1, func(p *packkv.Params) {
		p.SinkTokens, p.ZsFormat, p.KTransform = 3, packkv.ZsWide, packkv.KTransformCenter
		p.ResidualTokens, p.BlockTokens = 0, 16
	})
	eff := c.Params()
	if eff.SinkTokens != 3 || eff.ZsFormat != packkv.ZsWide || eff.KTransform != packkv.KTransformCenter {
		t.Fatalf("effective %+v", eff)
	}
	r := rng(5)
	n := 3 + 16 + 5
	k, v := kv(&r, n), kv(&r, n)
	if err := c.Append([]int32{0}, []int32{int32(n)}, packkv.F32(k), packkv.F32(v)); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats(0)
	if err != nil || st.NCompressedTokens != 16 || st.NResidualTokens != 8 {
		t.Fatalf("stats %+v %v", st, err) // 3 sink tokens + 5 residual, one block of 16
	}
	kh := make([]float32, len(k))
	if _, err := c.Decompress(0, kh, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3*nKV*headDim; i++ { // sink tokens: exact in f16
		if f16to32(f16(k[i])) != kh[i] {
			t.Fatalf("sink value %d: %v vs %v", i, kh[i], k[i])
		}
	}
}

func TestRoundTripErrorBound(t *testing.T) {
	r := rng(1)
	n := 64*4 + 128 + 9
	k, v := kv(&r, n), kv(&r, n)
	k16, v16 := make(packkv.F16, len(k)), make(packkv.F16, len(v))
	for i := range k {
		k16[i], v16[i] = f16(k[i]), f16(v[i])
	}
	c := newCache(t, 1, nil)
	if err := c.Append([]int32{0}, []int32{int32(n)}, k16, v16); err != nil {
		t.Fatal(err)
	}
	kh, vh := make([]float32, len(k)), make([]float32, len(v))
	got, err := c.Decompress(0, kh, vh)
	if err != nil || got != int64(n) {
		t.Fatalf("Decompress = %d, %v", got, err)
	}
	st, err := c.Stats(0)
	if err != nil {
		t.Fatal(err)
	}
	nc := int(st.NCompressedTokens)
	if nc == 0 || nc%64 != 0 || st.NResidualTokens != int64(n-nc) {
		t.Fatalf("stats %+v", st)
	}
	row := nKV * headDim
	for _, x := range []struct {
		in  packkv.F16
		out []float32
		r   float32
	}{{k16, kh, c.Params().RelScaleK}, {v16, vh, c.Params().RelScaleV}} {
		for tok := 0; tok < n; tok++ {
			lo, hi := math.Inf(1), math.Inf(-1)
			for i := 0; i < row; i++ {
				f := float64(f16to32(x.in[tok*row+i]))
				lo, hi = math.Min(lo, f), math.Max(hi, f)
			}
			bound := float64(x.r)*(hi-lo)/2*(1+1e-4) + 1e-6
			for i := 0; i < row; i++ {
				a, b := float64(f16to32(x.in[tok*row+i])), float64(x.out[tok*row+i])
				if tok < nc && math.Abs(a-b) > bound || tok >= nc && a != b {
					t.Fatalf("token %d ch %d: %v vs %v (bound %v, compressed %v)", tok, i, a, b, bound, tok < nc)
				}
			}
		}
	}
}

func TestStatsAndRatio(t *testing.T) {
	r := rng(2)
	c := newCache(t, 1, nil)
	if st, _ := c.Stats(-1); st.Ratio() != 0 {
		t.Fatal("empty ratio")
	}
	k := kv(&r, 1000)
	if err := c.Append([]int32{0}, []int32{1000}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	s, err := c.Stats(-1)
	if err != nil {
		t.Fatal(err)
	}
	if s.NTokens != 1000 || s.FP16Bytes != 1000*nKV*headDim*4 ||
		s.CompressedBytesUsed != s.KTileBytes+s.VTileBytes+s.KScaleBytes+s.VScaleBytes+s.IndexBytes+s.PermBytes ||
		s.AllInBytes() != s.CompressedBytesUsed+s.ResidualBytes || s.Ratio() < 1.5 {
		t.Fatalf("stats %+v ratio %v", s, s.Ratio())
	}
}

func TestAttentionMatchesFloat64Reference(t *testing.T) {
	r := rng(3)
	lengths := []int{700, 130}
	c := newCache(t, 2, nil)
	k, v := kv(&r, 830), kv(&r, 830)
	if err := c.Append([]int32{0, 1}, []int32{700, 130}, packkv.F32(k), packkv.F32(v)); err != nil {
		t.Fatal(err)
	}
	const nQ = 9
	ids := []int32{1, 0}
	q := make([]float32, 2*nQ*headDim)
	for i := range q {
		q[i] = r.uniform()
	}
	const ld = 701
	scores := make([]float32, 2*nQ*ld)
	if err := c.Scores(ids, nQ, packkv.F32(q), scores, ld); err != nil {
		t.Fatal(err)
	}
	probs := make([]float32, 2*nQ*ld)
	for i := range probs {
		probs[i] = (r.uniform() + 1) / 2
	}
	applied := make([]float32, 2*nQ*headDim)
	if err := c.Apply(ids, nQ, probs, ld, applied); err != nil {
		t.Fatal(err)
	}
	scale := float32(1 / math.Sqrt(headDim))
	out, lse := make([]float32, 2*nQ*headDim), make([]float32, 2*nQ)
	if err := c.Decode(ids, nQ, packkv.F32(q), scale, out, lse); err != nil {
		t.Fatal(err)
	}
	for i, seq := range ids {
		n := lengths[seq]
		kd, vd := make([]float32, n*nKV*headDim), make([]float32, n*nKV*headDim)
		if _, err := c.Decompress(seq, kd, vd); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < nQ; j++ {
			h := j / (nQ / nKV)
			s := make([]float64, n)
			for tok := 0; tok < n; tok++ {
				for d := 0; d < headDim; d++ {
					s[tok] += float64(q[(i*nQ+j)*headDim+d]) * float64(kd[(tok*nKV+h)*headDim+d])
				}
			}
			rowS := (i*nQ + j) * ld
			if e := relErr(scores[rowS:rowS+n], s); e > 1e-5 {
				t.Fatalf("scores seq %d head %d: rel err %g", seq, j, e)
			}
			m := math.Inf(-1)
			for _, x := range s {
				m = math.Max(m, x*float64(scale))
			}
			var sum float64
			p := make([]float64, n)
			for tok := range s {
				p[tok] = math.Exp(s[tok]*float64(scale) - m)
				sum += p[tok]
			}
			wantO, wantA := make([]float64, headDim), make([]float64, headDim)
			for tok := 0; tok < n; tok++ {
				for d := 0; d < headDim; d++ {
					x := float64(vd[(tok*nKV+h)*headDim+d])
					wantO[d] += p[tok] / sum * x
					wantA[d] += float64(probs[rowS+tok]) * x
				}
			}
			o := (i*nQ + j) * headDim
			if e := relErr(out[o:o+headDim], wantO); e > 1e-5 {
				t.Fatalf("decode seq %d head %d: rel err %g", seq, j, e)
			}
			if e := relErr(applied[o:o+headDim], wantA); e > 1e-5 {
				t.Fatalf("apply seq %d head %d: rel err %g", seq, j, e)
			}
			if want := m + math.Log(sum); math.Abs(float64(lse[i*nQ+j])-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Fatalf("lse %v vs %v", lse[i*nQ+j], want)
			}
		}
	}
	// f16 queries give nearly the same output.
	q16 := make(packkv.F16, len(q))
	for i := range q {
		q16[i] = f16(q[i])
	}
	out16 := make([]float32, len(out))
	if err := c.Decode(ids, nQ, q16, scale, out16, nil); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		if math.Abs(float64(out[i]-out16[i])) > 1e-2 {
			t.Fatalf("f16 query output differs at %d: %v vs %v", i, out16[i], out[i])
		}
	}
}

func TestRemoveResetSyncWorkspace(t *testing.T) {
	r := rng(4)
	c := newCache(t, 3, nil)
	k := kv(&r, 300)
	if err := c.Append([]int32{2}, []int32{300}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	out, lse := make([]float32, 9*headDim), make([]float32, 9)
	if err := c.Decode([]int32{0}, 9, packkv.F32(make([]float32, 9*headDim)), 0.1, out, lse); err != nil {
		t.Fatal(err)
	}
	if !math.IsInf(float64(lse[0]), -1) || out[0] != 0 {
		t.Fatalf("empty sequence: out %v lse %v", out[0], lse[0])
	}
	if err := c.RemoveSeq(2); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.SeqLength(2); n != 0 {
		t.Fatal("RemoveSeq kept tokens")
	}
	if err := c.Append([]int32{1}, []int32{300}, packkv.F32(k), packkv.F32(k)); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Stats(-1); st.NTokens != 0 {
		t.Fatal("Reset kept tokens")
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WorkspaceSize(1, 9); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	r := rng(5)
	c := newCache(t, 1, nil)
	k := kv(&r, 64)
	q := make([]float32, 9*headDim)
	for i := range q {
		q[i] = r.uniform()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]float32, 9*headDim)
			for i := 0; i < 30; i++ {
				n, err := c.SeqLength(0)
				if err == nil && n%64 != 0 {
					err = errors.New("torn append visible")
				}
				if err == nil {
					err = c.Decode([]int32{0}, 9, packkv.F32(q), 0.125, out, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if err := c.Append([]int32{0}, []int32{64}, packkv.F32(k), packkv.F32(k)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, _ := c.SeqLength(0); n != 64*20 {
		t.Fatalf("length %d", n)
	}
}

func TestCloseIsIdempotentAndFinalizerFrees(t *testing.T) {
	p, _ := packkv.DefaultParams()
	p.NKVHeads, p.HeadDim = nKV, headDim
	c, err := packkv.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SeqLength(0); !errors.Is(err, packkv.ErrInvalidState) {
		t.Fatalf("use after Close: %v", err)
	}
	// Caches dropped without Close are freed by the finalizer (no crash, no leak growth).
	for i := 0; i < 50; i++ {
		if _, err := packkv.New(p); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.GC()
}

func TestEveryCFunctionIsWrapped(t *testing.T) {
	header, err := os.ReadFile("../../include/packkv/packkv.h")
	if err != nil {
		t.Skip("not inside a libpackkv checkout:", err)
	}
	var src []byte
	for _, f := range []string{"packkv.go", "cache.go", "shims.c"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	re := regexp.MustCompile(`(?m)^PACKKV_API[^(]*?\b(packkv_\w+)\s*\(`)
	names := re.FindAllSubmatch(header, -1)
	if len(names) < 22 {
		t.Fatalf("found only %d C functions", len(names))
	}
	for _, m := range names {
		name := string(m[1])
		if !strings.Contains(string(src), name+"(") && !strings.Contains(string(src), "C."+name+"(") {
			t.Errorf("C function %s is not reachable from Go", name)
		}
	}
}

func TestCUDACache(t *testing.T) {
	if !packkv.HasCUDA() {
		t.Skip("no CUDA device (packkv.HasCUDA() is false)")
	}
	c := newCache(t, 1, func(p *packkv.Params) { p.Device = 0 })
	if c.Device() != 0 {
		t.Fatalf("device %d", c.Device())
	}
	k := make([]float32, nKV*headDim)
	if err := c.Append([]int32{0}, []int32{1}, packkv.F32(k), packkv.F32(k)); !errors.Is(err, packkv.ErrInvalidArgument) {
		t.Fatalf("host slices on a CUDA cache: %v", err)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stats(-1); err != nil || st.NTokens != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if ws, err := c.WorkspaceSize(1, 9); err != nil {
		t.Fatalf("%d %v", ws, err)
	}
}
