package gate

// quadLeaf is quadLeafGo in one call (quad_amd64.s; SSE2, which every
// amd64 CPU has).
//
//go:noescape
func quadLeaf(b *[quadRoom]byte, zero int) int
