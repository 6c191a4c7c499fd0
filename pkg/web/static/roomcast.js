/*
 * roomcast.js — browser client for the roomcast gateway's native WebSocket
 * protocol (GET /ws). No dependencies, no build step: load it with
 * <script src="/roomcast.js"></script> and use window.Roomcast.
 *
 *   const rc = new Roomcast.Client({rooms: ['sales']});
 *   rc.on('update', ({room, data}) => console.log(room, data));
 *   rc.on('state', ({state, attempt}) => console.log(state, attempt));
 *   rc.connect();
 *   rc.join('visitors'); rc.leave('sales');
 *
 * new Roomcast.Client(options)
 *   url          WebSocket URL. Default: ws(s)://<this page's host>/ws.
 *                A relative or http(s) URL is resolved against the page.
 *   token        for a gateway with auth.mode jwt: the token string, or a
 *                function returning it, called before every connection
 *                attempt (so it can hand out a fresh one). Sent as the token
 *                query parameter; with a cookie-based setup leave it unset.
 *   rooms        rooms to be in from the start. Default []. An invalid
 *                name throws a TypeError, as in join().
 *   backoff      {initial: 500, max: 15000}: reconnect delays in ms.
 *   deadAfter    45000. Browsers answer the gateway's pings without telling
 *                the page, so silence is the only sign of a dead connection
 *                a page can see: when no message at all has arrived for
 *                deadAfter ms while in at least one room, the socket is
 *                closed and reopened. Keep it well above the slowest room's
 *                update interval (the demo rooms update every 2–3 s);
 *                0 turns the check off.
 *   openTimeout  10000: a connection attempt not open by then is abandoned.
 *   stableAfter  10000: a connection live this long resets the backoff.
 * The options are kept as properties of the same names (url, backoff,
 * deadAfter, openTimeout, stableAfter). deadAfter may be changed at any
 * time, e.g. when a slower room is joined; the dead-connection check reads
 * it each time it runs.
 *
 * Methods
 *   connect()      open the connection and keep it open. Idempotent.
 *   close()        close for good: no reconnect, state 'offline'. rooms()
 *                  is kept; connect() again re-joins them.
 *   join(room, {history})  want to be in room. Remembered; sent now when
 *                  live and again after every reconnect. Throws a
 *                  TypeError for a name outside ^[A-Za-z0-9_-]{1,64}$.
 *                  history (optional): the room's recent updates to get
 *                  first, a count (300) or a duration ('5m'); asked only
 *                  while the client holds nothing of the room (a re-join
 *                  after a reconnect resumes with since instead).
 *   leave(room)    stop wanting room; its updates stop being delivered at
 *                  once, even before the gateway confirms.
 *   rooms()        a new Set of the rooms the client wants to be in.
 *   state          the current state (read-only), as in the state event.
 *   on(event, fn)  add a listener; returns the client. off(event, fn)
 *                  removes it. A listener that throws does not disturb
 *                  the client or the other listeners.
 *   Roomcast.isValidRoom(name)  whether a room name is valid.
 * Commands carry "id": 1, 2, 3… (per client) and replies are matched on it.
 *
 * Events (each listener gets one object)
 *   state   {state, attempt, delay}: 'connecting' (first attempt), 'live',
 *           'reconnecting' (attempt n, opening in delay ms), 'offline'
 *           (close() was called, or the browser reports it is offline).
 *   joined  {room}  the gateway confirmed a join (again after reconnects).
 *   left    {room}  the gateway confirmed a leave.
 *   update  {room, seq, prev, data, gap}  data is the producer's object.
 *           seq and prev are undefined when the gateway runs without
 *           history; gap is true when prev is not the last seq received
 *           for the room or the gateway flagged the update "missed"
 *           (updates were missed), false otherwise.
 *   error   {code, message, room, id}  an error reply of the gateway (see
 *           docs/protocol.md), code 'bad_message' for a line that is
 *           not JSON, or 'connect_failed' when the browser refused to
 *           create the WebSocket at all (retried with backoff). A join
 *           refused with bad_room, forbidden or too_many_rooms is
 *           removed from rooms(). rate_limited commands
 *           are retried after a second. history_unavailable is handled
 *           here (the join is retried without since) and not emitted.
 *   close   {code, reason}  the socket closed (also on close()); a dead
 *           connection is reported as 1006, reason 'no data for N ms'.
 *
 * Resume: a re-join asks for what was missed with "since" when the room's
 * last update had a seq; after a history_unavailable, since is never sent.
 *
 * Reconnect: attempt n waits a random time in [0, min(max, initial·2^(n-1))]
 * ("full jitter", so that a restarted replica's clients do not return all at
 * once). A connection live for stableAfter ms resets n. By close code:
 *   1012 service restart, 1013 try again later: the gateway asks us to go
 *     elsewhere; the first three such retries in a row wait at most
 *     `initial` (then normal backoff, so a broken replica is not hammered).
 *   1003, 1007, 1008, 1009 (policy / protocol): retried with backoff from
 *     attempt 3 on, since retrying at once would likely repeat the problem.
 *   4001 token expired: at once (the token option is asked again; a
 *     page must make it return a fresh token), then normal backoff.
 *   4008 too slow, and everything else: normal backoff.
 * While navigator.onLine is false the state is 'offline' and no attempt is
 * made; the 'online' event reconnects at once.
 */
(function (global) {
  'use strict';

  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const QUICK = new Set([1012, 1013, 4001]);
  const POLICY = new Set([1003, 1007, 1008, 1009]);
  // Refusals that will not change on retry: the room is no longer wanted.
  const FINAL = new Set(['bad_room', 'forbidden', 'too_many_rooms']);

  function isValidRoom(room) {
    return typeof room === 'string' && ROOM_RE.test(room);
  }

  function resolveURL(url) {
    if (!url) return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    const u = new URL(url, location.href);
    u.protocol = u.protocol.replace(/^http/, 'ws');
    return u.href;
  }

  class Client {
    constructor({url, token, rooms = [], backoff = {}, deadAfter = 45000,
                 openTimeout = 10000, stableAfter = 10000} = {}) {
      this.url = resolveURL(url);
      this.token = token;
      this.backoff = {initial: 500, max: 15000, ...backoff};
      this.deadAfter = deadAfter;
      this.openTimeout = openTimeout;
      this.stableAfter = stableAfter;

      this._wanted = new Set();
      for (const r of rooms) this._wanted.add(this._check(r));
      this._listeners = new Map(); // event -> Set of fns
      this._started = false;       // between connect() and close()
      this._ws = null;
      this._state = 'offline';
      this._attempt = 0;           // failed connections since the last stable one
      this._quick = 0;             // 1012/1013 retries in a row
      this._nextId = 1;
      this._pending = new Map();   // id -> command; in send order
      this._seq = new Map();       // room -> last seq received
      this._history = new Map();   // room -> history window asked on a fresh join
      this._useSince = true;
      this._lastMsg = 0;           // performance.now() of the last message
      this._timers = {retry: 0, watch: 0, stable: 0};
      this._onOnline = () => this._online();
      this._onOffline = () => this._offline();
    }

    get state() { return this._state; }
    rooms() { return new Set(this._wanted); }

    on(event, fn) {
      if (!this._listeners.has(event)) this._listeners.set(event, new Set());
      this._listeners.get(event).add(fn);
      return this;
    }

    off(event, fn) {
      this._listeners.get(event)?.delete(fn);
      return this;
    }

    connect() {
      if (this._started) return;
      this._started = true;
      global.addEventListener('online', this._onOnline);
      global.addEventListener('offline', this._onOffline);
      this._attempt = 0;
      if (navigator.onLine === false) this._setState('offline');
      else this._open();
    }

    close() {
      if (!this._started) return;
      this._started = false;
      global.removeEventListener('online', this._onOnline);
      global.removeEventListener('offline', this._onOffline);
      this._drop(1000, 'closed by client');
      this._setState('offline');
    }

    join(room, opts) {
      if (this._wanted.has(this._check(room))) return;
      this._wanted.add(room);
      if (opts && opts.history !== undefined) this._history.set(room, opts.history);
      if (this._wanted.size === 1) this._lastMsg = performance.now(); // silence so far was expected
      this._sendJoin(room);
    }

    leave(room) {
      if (!this._wanted.delete(room)) return;
      this._seq.delete(room); // a later join starts afresh, no replay of the gap
      this._history.delete(room);
      this._send({op: 'leave', room});
    }

    // --- internals ---

    _check(room) {
      if (!isValidRoom(room)) throw new TypeError(`roomcast: invalid room name ${JSON.stringify(room)}`);
      return room;
    }

    _emit(event, payload) {
      for (const fn of [...(this._listeners.get(event) || [])]) {
        // A listener's exception is rethrown outside our stack: reported
        // on the console as usual, but the client carries on.
        try { fn.call(this, payload); } catch (err) { setTimeout(() => { throw err; }); }
      }
    }

    _setState(state, delay) {
      if (state === this._state && state !== 'reconnecting') return;
      this._state = state;
      this._emit('state', {state, attempt: this._attempt, delay});
    }

    _open() {
      if (this._attempt === 0) this._setState('connecting'); // else still 'reconnecting'
      let ws;
      try {
        ws = new WebSocket(this._urlWithToken());
      } catch (err) {
        // Refused before any network (a URL or policy the browser rejects):
        // report it and keep to the backoff rather than stop for good.
        this._emit('error', {code: 'connect_failed', message: String(err && err.message || err)});
        this._timers.retry = setTimeout(() => this._started && !this._ws && this._lost(1006, 'connection refused by the browser'), 0);
        return;
      }
      this._ws = ws;
      ws.onopen = () => this._opened(ws);
      ws.onmessage = (ev) => this._message(ws, ev.data);
      ws.onclose = (ev) => this._ws === ws && this._lost(ev.code, ev.reason);
      this._timers.watch = setTimeout(() => {
        if (this._ws === ws) this._lost(1006, 'connection attempt timed out');
      }, this.openTimeout);
    }

    _urlWithToken() {
      const token = typeof this.token === 'function' ? this.token() : this.token;
      if (!token) return this.url;
      const u = new URL(this.url);
      u.searchParams.set('token', String(token));
      return u.href;
    }

    _opened(ws) {
      if (this._ws !== ws) return;
      clearTimeout(this._timers.watch);
      this._setState('live');
      this._lastMsg = performance.now();
      this._watch(ws);
      this._timers.stable = setTimeout(() => { this._attempt = 0; this._quick = 0; }, this.stableAfter);
      for (const room of this._wanted) this._sendJoin(room);
    }

    // Dead-connection check: one timer per deadAfter rather than one reset
    // per message.
    _watch(ws) {
      if (!this.deadAfter) return;
      const check = () => {
        if (this._ws !== ws) return;
        const now = performance.now();
        if (this._wanted.size === 0) this._lastMsg = now; // in no room, nothing is expected
        const idle = now - this._lastMsg;
        if (idle >= this.deadAfter) return this._lost(1006, `no data for ${this.deadAfter} ms`);
        this._timers.watch = setTimeout(check, this.deadAfter - idle);
      };
      this._timers.watch = setTimeout(check, this.deadAfter);
    }

    _message(ws, text) {
      if (this._ws !== ws) return;
      this._lastMsg = performance.now();
      if (typeof text !== 'string') return; // the gateway sends text frames only
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        let msg;
        try { msg = JSON.parse(line); } catch (err) {
          this._emit('error', {code: 'bad_message', message: `not JSON: ${line.slice(0, 200)}`});
          continue;
        }
        this._handle(msg);
        if (this._ws !== ws) return; // a listener closed the client
      }
    }

    _handle(msg) {
      const {op, room} = msg || {};
      switch (op) {
        case 'update': {
          if (!this._wanted.has(room)) return; // left while it was on the way
          const last = this._seq.get(room);
          const {seq, prev} = msg;
          // Never show an update twice: a seq at or below the last one
          // shown is a duplicate, unless the gateway says the history was
          // reset (missed, or a room's first update: prev 0).
          if (seq !== undefined && last !== undefined && seq <= last && msg.missed !== true && prev !== 0) return;
          // missed: the gateway could not replay all this client lacked;
          // what it sends from there on is complete again.
          const gap = msg.missed === true || (prev !== undefined && last !== undefined && prev !== last);
          if (seq !== undefined) this._seq.set(room, seq);
          this._emit('update', {room, seq, prev, data: msg.data, gap});
          return;
        }
        case 'joined':
        case 'left':
          this._pending.delete(msg.id);
          this._emit(op, {room});
          return;
        case 'error':
          return this._error(msg);
      }
    }

    _error(msg) {
      // The gateway answers commands in order; a rate_limited reply carries
      // no id, so it is about the oldest command still unanswered.
      let id = msg.id;
      if (id === undefined && msg.code === 'rate_limited') id = this._pending.keys().next().value;
      const cmd = this._pending.get(id);
      this._pending.delete(id);
      const room = msg.room !== undefined ? msg.room : cmd && cmd.room;
      if (cmd && cmd.op === 'join' && msg.code === 'history_unavailable') {
        this._useSince = false;
        this._history.clear();
        if (this._wanted.has(cmd.room)) this._sendJoin(cmd.room);
        return;
      }
      if (cmd && msg.code === 'rate_limited') {
        const ws = this._ws;
        setTimeout(() => {
          if (this._ws !== ws || ws.readyState !== WebSocket.OPEN) return; // a reconnect re-joins anyway
          const wanted = this._wanted.has(cmd.room);
          if (cmd.op === 'join' && wanted) this._sendJoin(cmd.room);
          if (cmd.op === 'leave' && !wanted) this._send({op: 'leave', room: cmd.room});
        }, 1000);
      }
      if (cmd && cmd.op === 'join' && FINAL.has(msg.code)) {
        this._wanted.delete(cmd.room);
        this._seq.delete(cmd.room);
      }
      this._emit('error', {code: msg.code, message: msg.message, room, id: msg.id});
    }

    _sendJoin(room) {
      const cmd = {op: 'join', room};
      if (this._useSince && this._seq.has(room)) cmd.since = this._seq.get(room);
      else if (this._history.has(room)) cmd.history = this._history.get(room);
      this._send(cmd);
    }

    _send(cmd) {
      const ws = this._ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return; // sent on (re)connect
      cmd.id = this._nextId++;
      this._pending.set(cmd.id, cmd);
      ws.send(JSON.stringify(cmd));
    }

    // _drop forgets the current socket (closing it if need be) and clears
    // all timers; it emits close when a socket was there.
    _drop(code, reason) {
      const ws = this._ws;
      this._ws = null;
      for (const t of Object.values(this._timers)) clearTimeout(t);
      this._pending.clear();
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState < WebSocket.CLOSING) ws.close(1000);
      this._emit('close', {code, reason});
    }

    // The connection ended without close(): emit close and plan the retry.
    _lost(code, reason) {
      this._drop(code, reason);
      if (!this._started) return;
      if (navigator.onLine === false) return this._setState('offline');
      const {initial, max} = this.backoff;
      this._attempt++;
      if (POLICY.has(code)) this._attempt = Math.max(this._attempt, 3);
      let cap = Math.min(max, initial * 2 ** Math.min(this._attempt - 1, 30));
      if (QUICK.has(code) && ++this._quick <= 3) cap = Math.min(cap, initial);
      else if (!QUICK.has(code)) this._quick = 0;
      const delay = Math.round(Math.random() * cap);
      this._setState('reconnecting', delay);
      this._timers.retry = setTimeout(() => this._open(), delay);
    }

    _offline() {
      this._drop(1006, 'browser offline');
      this._setState('offline');
    }

    _online() {
      if (this._ws) return;
      clearTimeout(this._timers.retry);
      this._attempt = 0;
      this._open();
    }
  }

  global.Roomcast = {Client, isValidRoom};
})(window);
