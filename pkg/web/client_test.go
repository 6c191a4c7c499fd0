package web_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/roomcast/roomcast/internal/roomtest"
)

// TestClientDropsDuplicates: roomcast.js never shows a seq at or below
// the last one it showed for a room, unless the gateway says the history
// started over (missed, or prev 0); and a join asks for history only while
// it holds nothing of the room (driven in Chromium, on the client's own
// message handling).
func TestClientDropsDuplicates(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	b := roomtest.StartBrowser(t, 800, 600)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/roomcast.js")))
	got := roomtest.Eval[string](t, b, `(() => {
		const s = document.createElement('script');
		s.textContent = document.body.innerText;
		document.head.appendChild(s);
		const sent = [];
		const rc = new Roomcast.Client({rooms: []});
		rc._send = (cmd) => sent.push(JSON.stringify(cmd));
		rc.join('sales', {history: '5m'});
		const seen = [];
		rc.on('update', (u) => seen.push(u.seq + (u.gap ? '!' : '')));
		const up = (seq, prev, extra) => rc._handle(Object.assign({op: 'update', room: 'sales', seq, prev, data: {}}, extra || {}));
		up(10, 8); up(11, 10); up(11, 10); up(9, 8); up(12, 11);
		up(5, 0);                     // a recreated stream: shown
		up(6, 5); up(3, 2, {missed: true}); up(4, 3);
		rc._sendJoin('sales');        // a re-join holds seq 4: since, not history
		return seen.join(' ') + ' | ' + sent.join(' ');
	})()`)
	want := `10 11 12 5! 6 3! 4 | {"op":"join","room":"sales","history":"5m"} {"op":"join","room":"sales","since":4}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
