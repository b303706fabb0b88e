// A user's printable summary report: GET /api/users/{id}/report?days=N with
// the token the dashboard keeps in this tab's session storage.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (x, d) => (typeof x === 'number' && isFinite(x) ? x.toFixed(d) : '–');

  function kv(dl, pairs) {
    dl.replaceChildren();
    pairs.forEach(([k, v]) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      dl.append(dt, dd);
    });
  }

  function list(el, items) {
    el.replaceChildren();
    items.forEach((t) => {
      const li = document.createElement('li');
      li.textContent = t;
      el.appendChild(li);
    });
  }

  function fail(text) {
    const el = $('report-error');
    el.textContent = text;
    el.hidden = false;
  }

  function render(r) {
    $('r-user').textContent = r.user_id;
    $('r-period').textContent = r.days + (r.days === 1 ? ' day' : ' days') + ', ' + r.from + ' to ' + r.to + ' (UTC)';
    $('r-generated').textContent = new Date(r.generated_at).toLocaleString();
    const c = r.counts;
    kv($('r-counts'), [
      ['Events', String(c.events)],
      ['Active days', String(c.active_days)],
      ['High-stress events', String(c.high_stress_events)],
      ['Acute-distress events', String(c.acute_distress_events)],
      ['High-severity anomalies', String(c.high_severity_anomalies)],
      ['All events (all time)', String(c.all_time_events)],
    ]);
    const a = r.averages;
    kv($('r-averages'), [
      ['Valence', fmt(a.valence, 3)],
      ['Arousal', fmt(a.arousal, 3)],
      ['Stress level', fmt(a.stress_level, 3)],
      ['Stability', fmt(a.stability_score, 3)],
    ]);
    const tbody = document.querySelector('#r-daily tbody');
    tbody.replaceChildren();
    r.daily.forEach((d) => {
      const tr = document.createElement('tr');
      [d.date, String(d.events), fmt(d.avg_valence, 2), fmt(d.avg_arousal, 2), fmt(d.avg_stress_level, 2),
        String(d.high_stress_events), String(d.acute_events), String(d.high_severity_anomalies)].forEach((t) => {
        const td = document.createElement('td');
        td.textContent = t;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    const e = r.emotions;
    $('r-emotions-basis').textContent = 'The latest ' + e.events + ' events of the period; all time: '
      + (r.emotions_all_time.dominant || '–') + ' dominates.';
    const ul = $('r-emotions');
    ul.replaceChildren();
    e.shares.forEach((s) => {
      const li = document.createElement('li');
      const name = document.createElement('span');
      name.textContent = s.emotion;
      const track = document.createElement('span');
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.display = 'block';
      bar.style.width = (100 * s.share) + '%';
      track.appendChild(bar);
      const n = document.createElement('span');
      n.className = 'n';
      n.textContent = Math.round(100 * s.share) + ' %';
      li.append(name, track, n);
      ul.appendChild(li);
    });
    const t = r.trajectory;
    kv($('r-trajectory'), [
      ['Valence trend', t ? t.valence.direction : '–'],
      ['Arousal trend', t ? t.arousal.direction : '–'],
      ['Patterns', r.patterns.length ? r.patterns.join(', ') : 'none'],
      ['Current state', r.current_state ? r.current_state.quadrant + ' (' + r.current_state.cluster + ')' : '–'],
    ]);
    kv($('r-risk'), [
      ['Risk score', fmt(r.risk.score, 2) + ' (' + r.risk.level + ')'],
      ['Factors', r.risk.factors.length ? r.risk.factors.join('; ') : 'none'],
      ['Risk sweep', r.risk_flag ? r.risk_flag.level + ' risk' : 'not flagged'],
    ]);
    list($('r-indicators'), r.risk_flag ? r.risk_flag.indicators.map((i) => i.reason) : []);
    list($('r-recommendations'), r.recommendations);
    const cr = r.credit_impact;
    kv($('r-credit'), [
      ['Action', cr.action],
      ['Risk-premium adjustment', cr.risk_premium_adjustment_pct + ' %'],
      ['Patterns', cr.patterns.length ? cr.patterns.join(', ') : 'none'],
    ]);
    list($('r-credit-reasons'), cr.reasons);
    $('report').hidden = false;
    $('report').dataset.loaded = 'true';
    document.title = 'Emotion report: ' + r.user_id;
  }

  async function load() {
    const q = new URLSearchParams(location.search);
    const user = q.get('user');
    const days = q.get('days') || '7';
    const token = sessionStorage.getItem('emotion-gateway-token');
    if (!token) {
      fail('Sign in on the dashboard first (the token is kept per tab), then open the report from there.');
      return;
    }
    if (!user) {
      fail('No user: open this page as report.html?user=ID&days=7.');
      return;
    }
    let resp;
    try {
      resp = await fetch('/api/users/' + encodeURIComponent(user) + '/report?days=' + encodeURIComponent(days), {
        headers: { 'x-auth-token': token }, cache: 'no-store',
      });
    } catch (e) {
      fail('Cannot reach the gateway: ' + e.message);
      return;
    }
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try { msg = (await resp.json()).error.message || msg; } catch (_) { /* not JSON */ }
      fail('No report: ' + msg);
      return;
    }
    render(await resp.json());
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('print').addEventListener('click', () => window.print());
    load();
  });
})();
