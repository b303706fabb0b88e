// Emotion gateway dashboard. Plain JavaScript, no build step; charts with the
// vendored uPlot. Everything live arrives over one WebSocket (/ws/dashboard);
// the page never polls. HTTP requests carry the token in an `x-auth-token`
// header; the WebSocket is opened with a one-time ticket from
// POST /api/dashboard/ticket, so the token never appears in a URL.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  const SOURCES = ['text', 'voice', 'facial', 'physiological', 'survey', 'biometric', 'behavioral', 'contextual'];
  const COLORS = {
    text: '#2f6fde', voice: '#e07b00', facial: '#8e44ad', physiological: '#c62828',
    survey: '#2e7d32', biometric: '#00838f', behavioral: '#6d4c41', contextual: '#546e7a',
  };
  const QUADRANTS = [
    // name (as the analyzer reports it), where, what it holds
    ['high_negative', 'valence < 0, arousal ≥ 0.5', 'stress, anxiety, anger'],
    ['high_positive', 'valence ≥ 0, arousal ≥ 0.5', 'joy, excitement'],
    ['low_negative', 'valence < 0, arousal < 0.5', 'sadness, boredom'],
    ['low_positive', 'valence ≥ 0, arousal < 0.5', 'calm, contentment'],
  ];
  const INDICATORS = [
    ['high_stress', 'High stress'],
    ['depression_indicators', 'Depression indicators'],
    ['anxiety', 'Anxiety'],
    ['volatility', 'Volatility'],
    ['crisis', 'Crisis (risk flagged)'],
  ];
  const ALERT_NAMES = {
    high_stress: 'High stress',
    depression_indicators: 'Depression indicators',
    risk_flagged: 'Risk flagged',
    high_severity_anomaly: 'High-severity anomaly',
    risk_sweep: 'Risk sweep: flagged over recent history',
  };
  const INDICATOR_NAMES = {
    high_stress: 'high stress',
    depression_indicators: 'depression indicators',
    anxiety_pattern: 'anxiety pattern',
    emotional_volatility: 'volatility',
    emotional_crisis: 'crisis',
    risk_score: 'risk score ≥ 0.7',
  };
  const MAX_POINTS = 600;      // recent events on the circumplex
  const MAX_TIMELINE = 300;    // points per user on the timeline
  const MAX_ALERTS = 60;
  const MAX_USERS = 500;       // users tracked for the timeline
  const MAX_FUSED = 20;        // users in the fused-estimates table

  const st = {
    token: null,
    ws: null,
    retryMs: 1000,
    reconnectTimer: null,
    points: [],               // [{v, a, src}]
    users: new Map(),         // user -> [{t, v, a, anomaly, id}]
    timelineUser: '',
    alertKeys: new Set(),
    alertCount: 0,
    charts: {},
    fused: new Map(),         // user -> latest fused estimate (newest last)
    redrawPending: false,
  };

  // ---------- HTTP ----------

  function api(path, opts) {
    const o = Object.assign({ cache: 'no-store' }, opts || {});
    o.headers = Object.assign({ 'x-auth-token': st.token }, o.headers || {});
    return fetch(path, o);
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) { /* not JSON */ }
    return resp.status + ' ' + resp.statusText;
  }

  // ---------- login ----------

  function showLoginError(text) {
    const el = $('login-error');
    el.textContent = text;
    el.hidden = false;
  }

  async function getTicket() {
    let resp;
    try {
      resp = await api('/api/dashboard/ticket', { method: 'POST' });
    } catch (e) {
      return { error: 'Cannot reach the gateway: ' + e.message };
    }
    if (resp.status === 401) {
      return { auth: true, error: 'Sign-in failed: the gateway did not accept this token (' + (await errorMessage(resp)) + ').' };
    }
    if (resp.status === 403) {
      return { auth: true, error: 'Sign-in failed: this token lacks the read scope.' };
    }
    if (!resp.ok) return { error: 'The gateway answered ' + (await errorMessage(resp)) };
    return { ticket: (await resp.json()).ticket };
  }

  async function login(token) {
    st.token = token;
    $('login-button').disabled = true;
    const t = await getTicket();
    $('login-button').disabled = false;
    if (!t.ticket) {
      st.token = null;
      sessionStorage.removeItem('emotion-gateway-token');
      showLoginError(t.error);
      return;
    }
    $('login-error').hidden = true;
    // Per tab only: closing the tab forgets it.
    sessionStorage.setItem('emotion-gateway-token', token);
    $('login').hidden = true;
    $('app').hidden = false;
    initCharts();
    connect(t.ticket);
  }

  function logout(message) {
    sessionStorage.removeItem('emotion-gateway-token');
    st.token = null;
    clearTimeout(st.reconnectTimer);
    if (st.ws) {
      st.ws.onclose = null;
      st.ws.close();
      st.ws = null;
    }
    $('app').hidden = true;
    $('login').hidden = false;
    $('token').value = '';
    if (message) showLoginError(message);
  }

  // ---------- WebSocket ----------

  function setConn(text, cls) {
    const el = $('conn-status');
    el.textContent = text;
    el.className = 'pill ' + (cls || '');
  }

  function connect(ticket) {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + '/ws/dashboard?ticket=' + encodeURIComponent(ticket));
    st.ws = ws;
    setConn('connecting');
    ws.onopen = () => { st.retryMs = 1000; setConn('live', 'ok'); };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { return; }
      handle(msg);
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      setConn(ev.code === 1008 ? 'refused: ' + ev.reason : 'disconnected, retrying', 'bad');
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(st.reconnectTimer);
    st.reconnectTimer = setTimeout(async () => {
      if (!st.token) return;
      const t = await getTicket();
      if (t.ticket) { connect(t.ticket); return; }
      if (t.auth) { logout(t.error); return; }
      st.retryMs = Math.min(st.retryMs * 2, 15000);
      scheduleReconnect();
    }, st.retryMs);
  }

  function handle(msg) {
    switch (msg.type) {
      case 'hello':
        $('gateway-id').textContent = msg.gateway_id + ' · v' + msg.version;
        (msg.alerts || []).forEach(addAlert);
        renderMetrics(msg.metrics);
        break;
      case 'events':
        (msg.events || []).forEach(addEvent);
        (msg.events || []).forEach(addFused);
        renderFused();
        scheduleRedraw();
        break;
      case 'alert':
        addAlert(msg.alert);
        break;
      case 'metrics':
        renderMetrics(msg);
        break;
      case 'status':
        renderPlugins(msg.plugins);
        renderSync(msg.sync);
        renderBuffer(msg.buffer);
        renderDevices(msg.devices);
        renderMqtt(msg.mqtt);
        renderFlagged(msg.risk_sweep);
        break;
      default:
        break;
    }
  }

  // ---------- counters, sources, risk ----------

  function fmt(x, digits) {
    return typeof x === 'number' && isFinite(x) ? x.toFixed(digits) : '–';
  }

  function renderMetrics(frame) {
    if (!frame || !frame.metrics) return;
    const m = frame.metrics;
    $('total-events').textContent = String(m.total_events);
    $('events-per-minute').textContent = String(m.events_per_minute);
    $('unique-users').textContent = String(m.unique_users);
    $('sessions').textContent = String(m.unique_sessions);
    $('active-users').textContent = String(frame.active_users);
    $('live-sessions').textContent = String(frame.live_sessions);
    $('avg-valence').textContent = fmt(m.avg_valence, 3);
    $('avg-arousal').textContent = fmt(m.avg_arousal, 3);
    $('dominant-emotion').textContent = m.dominant_emotion || '–';
    renderSources(m.source_distribution || {});
    renderRisk(frame.risk || {});
  }

  function renderSources(dist) {
    const ul = $('sources');
    const total = Object.values(dist).reduce((a, b) => a + b, 0);
    ul.replaceChildren();
    SOURCES.forEach((s) => {
      const n = dist[s] || 0;
      const li = document.createElement('li');
      li.dataset.source = s;
      const name = document.createElement('span');
      name.textContent = s;
      const track = document.createElement('span');
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.display = 'block';
      bar.style.width = (total ? (100 * n) / total : 0) + '%';
      bar.style.background = COLORS[s];
      track.appendChild(bar);
      const count = document.createElement('span');
      count.className = 'n';
      count.textContent = String(n);
      li.append(name, track, count);
      ul.appendChild(li);
    });
  }

  function renderRisk(risk) {
    const box = $('risk');
    box.replaceChildren();
    INDICATORS.forEach(([key, title]) => {
      const r = risk[key] || { count: 0, users: [] };
      const div = document.createElement('div');
      div.id = 'risk-' + key;
      div.className = 'risk-item' + (r.count > 0 ? ' active' : '');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = title;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = String(r.count);
      const users = document.createElement('div');
      users.className = 'users';
      users.textContent = r.users.length
        ? r.users.join(', ') + (r.count > r.users.length ? ' …' : '')
        : 'none';
      div.append(name, count, users);
      box.appendChild(div);
    });
  }

  // ---------- fused estimates ----------

  function addFused(e) {
    if (!e.fused) return;
    // Re-insert so the map stays ordered newest last.
    st.fused.delete(e.user_id);
    st.fused.set(e.user_id, e.fused);
    while (st.fused.size > MAX_FUSED) st.fused.delete(st.fused.keys().next().value);
  }

  function renderFused() {
    const tbody = document.querySelector('#fused tbody');
    const rows = [...st.fused.entries()].reverse();
    if (!rows.length) return;
    tbody.replaceChildren();
    rows.forEach(([user, f]) => {
      const tr = document.createElement('tr');
      tr.dataset.user = user;
      tr.dataset.sources = String(f.sources.length);
      cell(tr, user);
      cell(tr, fmt(f.valence, 2));
      cell(tr, fmt(f.arousal, 2));
      cell(tr, f.label);
      cell(tr, fmt(f.confidence, 2));
      cell(tr, fmt(f.agreement, 2));
      cell(tr, f.sources.join(', '), 'wrap');
      tbody.appendChild(tr);
    });
  }

  // ---------- flagged users, reports ----------

  function reportHref(user, days) {
    return '/dashboard/report.html?user=' + encodeURIComponent(user) + '&days=' + encodeURIComponent(days);
  }

  function renderFlagged(r) {
    if (!r) return;
    $('flagged-count').textContent = String(r.count);
    $('flagged-swept').textContent = r.swept_at
      ? 'swept ' + new Date(r.swept_at).toLocaleTimeString()
      : (r.enabled ? 'first sweep pending' : 'sweep off');
    const tbody = document.querySelector('#flagged tbody');
    tbody.replaceChildren();
    if (!r.flagged.length) {
      const tr = document.createElement('tr');
      cell(tr, 'nobody flagged', 'muted');
      tbody.appendChild(tr);
      return;
    }
    r.flagged.forEach((f) => {
      const tr = document.createElement('tr');
      tr.dataset.user = f.user_id;
      tr.dataset.level = f.level;
      cell(tr, f.user_id);
      cell(tr, f.level, 'level-' + f.level);
      cell(tr, fmt(f.risk_score, 2));
      cell(tr, f.indicators.map((i) => INDICATOR_NAMES[i] || i).join(', '), 'wrap');
      const td = document.createElement('td');
      const a = document.createElement('a');
      a.href = reportHref(f.user_id, $('report-days').value || '7');
      a.className = 'report-link';
      a.textContent = 'report';
      td.appendChild(a);
      tr.appendChild(td);
      tbody.appendChild(tr);
    });
  }

  function openReport(ev) {
    ev.preventDefault();
    const user = $('report-user').value.trim();
    if (!user) return;
    // Same tab: the token stays in this tab's session storage.
    location.href = reportHref(user, $('report-days').value);
  }

  // ---------- alerts ----------

  function addAlert(a) {
    if (!a) return;
    // A sweep alert names no event: its user and time identify it.
    const key = (a.event_id || a.user_id + '@' + a.raised_at) + '/' + a.kind;
    if (st.alertKeys.has(key)) return;
    st.alertKeys.add(key);
    st.alertCount += 1;
    $('alert-count').textContent = String(st.alertCount);
    const li = document.createElement('li');
    li.className = 'sev-' + a.severity;
    li.dataset.user = a.user_id;
    li.dataset.kind = a.kind;
    const time = document.createElement('time');
    time.dateTime = a.raised_at;
    time.textContent = new Date(a.raised_at).toLocaleTimeString();
    const who = document.createElement('b');
    who.textContent = a.user_id;
    const what = document.createElement('span');
    // The server's message names the kind already ("high stress: valence …").
    what.textContent = ' · ' + a.message;
    li.title = ALERT_NAMES[a.kind] || a.kind;
    li.append(time, who, what);
    const ul = $('alerts');
    ul.insertBefore(li, ul.firstChild);
    while (ul.children.length > MAX_ALERTS) ul.removeChild(ul.lastChild);
    trackUser(a.user_id);
  }

  // ---------- events, charts ----------

  function trackUser(user) {
    if (!st.users.has(user)) {
      if (st.users.size >= MAX_USERS) return;
      st.users.set(user, []);
      const opt = document.createElement('option');
      opt.value = user;
      opt.textContent = user;
      const sel = $('timeline-user');
      if (!st.timelineUser) {
        sel.replaceChildren();
        st.timelineUser = user;
      }
      sel.appendChild(opt);
      sel.value = st.timelineUser;
    }
  }

  function addEvent(e) {
    st.points.push({ v: e.valence, a: e.arousal, src: e.source });
    if (st.points.length > MAX_POINTS) st.points.splice(0, st.points.length - MAX_POINTS);
    trackUser(e.user_id);
    const series = st.users.get(e.user_id);
    if (!series) return;
    const p = { t: Date.parse(e.timestamp) / 1000, v: e.valence, a: e.arousal, anomaly: e.anomaly, id: e.event_id };
    series.push(p);
    // Senders' clocks may disagree; keep the timeline in time order.
    if (series.length > 1 && series[series.length - 2].t > p.t) series.sort((x, y) => x.t - y.t);
    if (series.length > MAX_TIMELINE) series.splice(0, series.length - MAX_TIMELINE);
  }

  function scheduleRedraw() {
    if (st.redrawPending) return;
    st.redrawPending = true;
    requestAnimationFrame(() => {
      st.redrawPending = false;
      drawCircumplex();
      drawTimeline();
    });
  }

  function chartWidth(el) {
    return Math.max(240, el.clientWidth || 320);
  }

  // Quadrant lines and names, drawn on uPlot's canvas after each redraw.
  function drawQuadrantGuides(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const x0 = u.valToPos(0, 'x', true);
    const yMid = u.valToPos(0.5, 'y', true);
    const px = window.devicePixelRatio || 1;
    ctx.save();
    ctx.strokeStyle = '#98a2b3';
    ctx.setLineDash([4 * px, 4 * px]);
    ctx.beginPath();
    ctx.moveTo(x0, top);
    ctx.lineTo(x0, top + height);
    ctx.moveTo(left, yMid);
    ctx.lineTo(left + width, yMid);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = '#667085';
    ctx.font = (11 * px) + 'px system-ui, sans-serif';
    const pad = 6 * px;
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left';
    ctx.fillText('high_negative', left + pad, top + pad);
    ctx.textAlign = 'right';
    ctx.fillText('high_positive', left + width - pad, top + pad);
    ctx.textBaseline = 'bottom';
    ctx.textAlign = 'left';
    ctx.fillText('low_negative', left + pad, top + height - pad);
    ctx.textAlign = 'right';
    ctx.fillText('low_positive', left + width - pad, top + height - pad);
    ctx.restore();
  }

  function circumplexData() {
    const data = [null];
    SOURCES.forEach((s) => {
      const pts = st.points.filter((p) => p.src === s);
      data.push([pts.map((p) => p.v), pts.map((p) => p.a)]);
    });
    return data;
  }

  function timelineData() {
    const pts = st.users.get(st.timelineUser) || [];
    return [
      pts.map((p) => p.t),
      pts.map((p) => p.v),
      pts.map((p) => p.a),
      pts.map((p) => (p.anomaly ? p.v : null)),
    ];
  }

  // Tick steps of the timeline, in seconds: 1 s up to 1 day.
  const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  function timeLabels(u, splits, axisIdx, space, incr) {
    const withSeconds = incr < 60;
    const labels = splits.map((t) => {
      const d = new Date(t * 1000);
      const p = (n) => String(n).padStart(2, '0');
      const hm = p(d.getHours()) + ':' + p(d.getMinutes());
      return withSeconds ? hm + ':' + p(d.getSeconds()) : hm;
    });
    // The canvas holds the text; tests read it here.
    $('timeline').dataset.xLabels = labels.join(' ');
    return labels;
  }

  function initCharts() {
    if (st.charts.circ) return;
    const circEl = $('circumplex');
    st.charts.circ = new uPlot({
      mode: 2,
      width: chartWidth(circEl),
      height: 300,
      legend: { live: false },
      cursor: { show: false, drag: { x: false, y: false } },
      scales: {
        x: { time: false, auto: false, range: [-1, 1] },
        y: { auto: false, range: [0, 1] },
      },
      axes: [
        { label: 'valence', scale: 'x' },
        { label: 'arousal', scale: 'y' },
      ],
      series: [null].concat(SOURCES.map((s) => ({
        label: s,
        stroke: COLORS[s],
        fill: COLORS[s] + 'b0',
        facets: [{ scale: 'x', auto: false }, { scale: 'y', auto: false }],
        paths: uPlot.paths.points(),
        points: { show: false, size: 7, width: 1 },
      }))),
      hooks: { draw: [drawQuadrantGuides] },
    }, circumplexData(), circEl);

    const ql = $('quadrants');
    ql.replaceChildren();
    QUADRANTS.forEach(([name, where, what]) => {
      const li = document.createElement('li');
      li.dataset.quadrant = name;
      const b = document.createElement('b');
      b.textContent = name;
      li.append(b, document.createTextNode(' (' + where + '): ' + what + ' · '));
      const n = document.createElement('span');
      n.className = 'q-count';
      n.textContent = '0';
      li.append(n, document.createTextNode(' recent'));
      ql.appendChild(li);
    });

    const tlEl = $('timeline');
    st.charts.tl = new uPlot({
      width: chartWidth(tlEl),
      height: 260,
      scales: { x: { time: true }, y: { auto: false, range: [-1, 1] } },
      // Whole seconds at the finest: events milliseconds apart made uPlot
      // label ticks like ":15.500".
      axes: [{ incrs: TIME_INCRS, values: timeLabels, space: 70 }, { label: 'valence / arousal' }],
      series: [
        {},
        { label: 'valence', stroke: '#2f6fde', width: 2, points: { show: true, size: 4 } },
        { label: 'arousal', stroke: '#e07b00', width: 2, points: { show: true, size: 4 } },
        {
          label: 'anomaly',
          stroke: '#c62828',
          fill: '#c62828',
          paths: () => null,
          points: { show: true, size: 12, width: 2, stroke: '#c62828', fill: '#c6282840' },
        },
      ],
    }, timelineData(), tlEl);

    $('timeline-user').addEventListener('change', (ev) => {
      st.timelineUser = ev.target.value;
      seedTimeline(st.timelineUser);
      drawTimeline();
    });

    // Follow the layout (phone rotation, window resize).
    const ro = new ResizeObserver(() => {
      st.charts.circ.setSize({ width: chartWidth(circEl), height: 300 });
      st.charts.tl.setSize({ width: chartWidth(tlEl), height: 260 });
    });
    ro.observe(circEl);
    ro.observe(tlEl);
  }

  function drawCircumplex() {
    const c = st.charts.circ;
    if (!c) return;
    c.setData(circumplexData());
    $('circumplex').dataset.points = String(st.points.length);
    const counts = { high_negative: 0, high_positive: 0, low_negative: 0, low_positive: 0 };
    st.points.forEach((p) => {
      counts[(p.a >= 0.5 ? 'high_' : 'low_') + (p.v >= 0 ? 'positive' : 'negative')] += 1;
    });
    document.querySelectorAll('#quadrants li').forEach((li) => {
      li.querySelector('.q-count').textContent = String(counts[li.dataset.quadrant] || 0);
    });
  }

  function drawTimeline() {
    const c = st.charts.tl;
    if (!c) return;
    const data = timelineData();
    c.setData(data);
    const el = $('timeline');
    el.dataset.points = String(data[0].length);
    el.dataset.anomalies = String(data[3].filter((x) => x !== null).length);
    el.dataset.user = st.timelineUser;
  }

  // A user picked from the list: fill in their last minutes from the API
  // (once, on selection), with the anomalies the analyzer remembers.
  async function seedTimeline(user) {
    if (!user) return;
    const from = new Date(Date.now() - 10 * 60 * 1000).toISOString();
    try {
      const [evResp, sumResp] = await Promise.all([
        api('/api/users/' + encodeURIComponent(user) + '/events?limit=5000&from=' + encodeURIComponent(from)),
        api('/api/users/' + encodeURIComponent(user) + '/summary'),
      ]);
      if (!evResp.ok) return;
      const events = (await evResp.json()).events || [];
      const anomalies = new Map();
      if (sumResp.ok) {
        ((await sumResp.json()).recent_anomalies || []).forEach((a) => anomalies.set(a.event_id, a.severity));
      }
      const series = st.users.get(user) || [];
      const known = new Set(series.map((p) => p.id));
      events.slice(-MAX_TIMELINE).forEach((e) => {
        if (known.has(e.event_id)) return;
        series.push({ t: Date.parse(e.timestamp) / 1000, v: e.valence, a: e.arousal, anomaly: anomalies.get(e.event_id) || null, id: e.event_id });
      });
      series.sort((x, y) => x.t - y.t);
      if (series.length > MAX_TIMELINE) series.splice(0, series.length - MAX_TIMELINE);
      st.users.set(user, series);
      if (st.timelineUser === user) drawTimeline();
    } catch (_) { /* the live feed still fills it */ }
  }

  // ---------- status: plugins, sync, devices, MQTT ----------

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function pct(rate) {
    return typeof rate === 'number' && isFinite(rate) ? (100 * rate).toFixed(1) + '%' : '–';
  }

  // A replacement's canary, under the plugin's state: on trial (readings
  // compared so far and both rates), or how it ended and why.
  function canaryLine(c) {
    const div = document.createElement('div');
    div.className = 'canary canary-' + c.state;
    const who = 'canary ' + c.candidate.producer;
    if (c.state === 'shadowing') {
      div.textContent = who + ': shadowing, ' + c.readings + '/' + c.min_readings
        + ' readings, errors ' + pct(c.candidate.error_rate) + ' vs ' + pct(c.current.error_rate)
        + ', deadline misses ' + pct(c.candidate.deadline_miss_rate) + ' vs '
        + pct(c.current.deadline_miss_rate);
    } else {
      const when = c.decided_at ? ' ' + new Date(c.decided_at).toLocaleString() : '';
      div.textContent = who + ' ' + c.state.replace('_', ' ') + when + ': ' + (c.reason || '');
    }
    return div;
  }

  function renderPlugins(p) {
    const tbody = document.querySelector('#plugins tbody');
    tbody.replaceChildren();
    const list = (p && p.plugins) || [];
    if (!list.length) {
      const tr = document.createElement('tr');
      cell(tr, 'no plugins loaded', 'muted');
      tbody.appendChild(tr);
      return;
    }
    list.forEach((pl) => {
      const tr = document.createElement('tr');
      tr.dataset.plugin = pl.name;
      cell(tr, pl.producer || pl.name);
      cell(tr, pl.state + (pl.reason ? ': ' + pl.reason : ''), 'state-' + pl.state);
      if (pl.canary) tr.lastChild.appendChild(canaryLine(pl.canary));
      cell(tr, (pl.sources || []).join(', '));
      cell(tr, String(pl.stats ? pl.stats.calls : 0));
      cell(tr, String(pl.stats ? pl.stats.errors : 0));
      cell(tr, pl.stats && pl.stats.mean_us_per_reading != null ? pl.stats.mean_us_per_reading.toFixed(1) : '–');
      tbody.appendChild(tr);
    });
  }

  function kv(dl, k, v) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }

  function renderSync(s) {
    const dl = $('sync');
    dl.replaceChildren();
    if (!s) return;
    kv(dl, 'enabled', s.enabled ? 'yes' : 'no');
    kv(dl, 'connected', s.connected ? 'yes' : 'no');
    kv(dl, 'lag', s.lag_events + ' events, ' + fmt(s.lag_seconds, 1) + ' s');
    kv(dl, 'shipped', s.events_shipped + ' events, ' + s.summaries_shipped + ' summaries');
    kv(dl, 'failures', String(s.failures));
    // Events the central database refused for their content: set aside so
    // the rest keeps flowing (see GET /api/sync for the entries).
    const dead = s.dead_letters || 0;
    kv(dl, 'dead-lettered', String(dead) + (dead ? ' events refused centrally' : ''));
    if (dead && s.dead_letters_recent && s.dead_letters_recent.length) {
      const last = s.dead_letters_recent[s.dead_letters_recent.length - 1];
      kv(dl, 'last refused', last.event_id + ' (user ' + last.user_id + '): ' + last.sqlstate + ' ' + last.message);
    }
    if (s.last_error) kv(dl, 'last error', s.last_error);
  }

  function renderBuffer(b) {
    const dl = $('buffer');
    dl.replaceChildren();
    if (!b) return;
    const st = b.stats || {};
    const dmg = b.damage || {};
    kv(dl, 'events', String(st.events));
    kv(dl, 'on disk', fmt((st.bytes_on_disk || 0) / 1048576, 1) + ' MiB');
    const lost = dmg.acknowledged_lost || 0;
    kv(dl, 'lost to damage', lost ? lost + ' acknowledged events' : 'none');
    if (lost) dl.lastChild.className = 'state-quarantined';
    const repairs = dmg.repairs || [];
    if (repairs.length) {
      const r = repairs[repairs.length - 1];
      kv(dl, 'last repair', r.at + ': ' + r.reason + ' (salvaged ' + r.salvaged_events + ' events; damaged store kept at ' + r.moved_to + ')');
    }
    if (dmg.last_scrub) kv(dl, 'last scrub', dmg.last_scrub.at + (dmg.last_scrub.repair_scheduled ? ': damage found, repair at next start' : ': clean'));
  }

  function renderDevices(d) {
    const box = $('devices');
    box.replaceChildren();
    if (!d) return;
    const dl = document.createElement('dl');
    dl.className = 'kv';
    const ble = d.ble || {};
    kv(dl, 'BLE', ble.available ? 'available' : 'unavailable' + (ble.reason ? ': ' + ble.reason : ''));
    const pairings = ble.pairings || [];
    kv(dl, 'paired', String(pairings.length));
    kv(dl, 'serial ports', String((d.serial || []).length));
    if (d.readings) kv(dl, 'readings', d.readings.received + ' received, ' + d.readings.stored + ' stored, ' + d.readings.failed + ' failed');
    box.appendChild(dl);
    if (pairings.length) {
      const table = document.createElement('table');
      table.id = 'ble-pairings';
      const head = document.createElement('tr');
      ['Address', 'User', 'Name'].forEach((h) => {
        const th = document.createElement('th');
        th.textContent = h;
        head.appendChild(th);
      });
      table.appendChild(head);
      pairings.forEach((p) => {
        const tr = document.createElement('tr');
        cell(tr, p.address);
        cell(tr, p.user_id);
        cell(tr, p.name || p.kind || '');
        table.appendChild(tr);
      });
      box.appendChild(table);
    }
    (d.serial || []).forEach((s) => {
      const p = document.createElement('p');
      p.className = 'small';
      p.textContent = 'serial ' + s.path + (s.device_id ? ' (' + s.device_id + ')' : '') + (s.user_id ? ' → user ' + s.user_id : '');
      box.appendChild(p);
    });
  }

  function renderMqtt(m) {
    const dl = $('mqtt');
    dl.replaceChildren();
    if (!m || !m.enabled) {
      kv(dl, 'MQTT', 'off');
      return;
    }
    const e = m.embedded || {};
    if (e.enabled) {
      kv(dl, 'broker', (e.listeners || []).map((l) => l.addr + (l.tls ? ' (TLS)' : '')).join(', '));
      kv(dl, 'clients', String(e.connected_clients));
      const r = e.refused || {};
      kv(dl, 'refused', (r.bad_credentials || 0) + ' credentials, ' + (r.busy || 0) + ' busy');
    } else {
      kv(dl, 'broker', 'off');
    }
    const u = m.upstream || {};
    kv(dl, 'upstream', u.state + (u.config ? ' (' + u.config.host + ':' + u.config.port + ')' : ''));
    const msgs = m.messages || {};
    const rejected = Object.values(msgs.rejected || {}).reduce((a, b) => a + b, 0);
    kv(dl, 'messages', msgs.received + ' received, ' + msgs.stored + ' stored, ' + rejected + ' rejected');
    kv(dl, 'devices', String(Object.keys(m.devices || {}).length));
  }

  // ---------- export ----------

  async function doExport(ev) {
    ev.preventDefault();
    const status = $('export-status');
    const user = $('export-user').value.trim();
    const params = new URLSearchParams({ user_id: user, format: $('export-format').value, kind: $('export-kind').value });
    const from = $('export-from').value.trim();
    const to = $('export-to').value.trim();
    if (from) params.set('from', from);
    if (to) params.set('to', to);
    status.textContent = 'exporting…';
    status.className = 'small';
    let resp;
    try {
      resp = await api('/api/export?' + params.toString());
    } catch (e) {
      status.textContent = 'Export failed: ' + e.message;
      status.className = 'small error';
      return;
    }
    if (!resp.ok) {
      status.textContent = 'Export failed: ' + (await errorMessage(resp));
      status.className = 'small error';
      return;
    }
    const blob = await resp.blob();
    const cd = resp.headers.get('content-disposition') || '';
    const m = /filename="([^"]+)"/.exec(cd);
    const name = m ? m[1] : 'export';
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = 'Downloaded ' + name + ' (' + blob.size + ' bytes)' + (resp.headers.get('x-export-truncated') ? ', truncated' : '');
  }

  // ---------- start ----------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      if (!token) {
        showLoginError('Enter a token.');
        return;
      }
      login(token);
    });
    $('logout').addEventListener('click', () => logout());
    $('export-form').addEventListener('submit', doExport);
    $('report-form').addEventListener('submit', openReport);
    const saved = sessionStorage.getItem('emotion-gateway-token');
    if (saved) login(saved);
  });
})();
