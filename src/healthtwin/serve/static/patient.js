// Patient page: timeline, forecast, what-if, live updates (SSE). Data from the REST API.
(function () {
  'use strict';
  var HT = window.healthtwin;
  var main = document.getElementById('main');
  var twin = main.getAttribute('data-twin');
  var base = '/twins/' + twin;
  var GLUCOSE = ['2339-0', '2345-7', '41653-7', '14749-6', '15074-8', '99504-3'];
  var timeline = { code: main.getAttribute('data-code'), points: [] };

  // ------------------------------------------------------------------ timeline
  function timelineData() {
    var pts = timeline.points.slice().sort(function (a, b) { return a.t - b.t; });
    return [pts.map(function (p) { return p.t; }), pts.map(function (p) { return p.v; })];
  }

  function drawTimeline() {
    var host = document.getElementById('timeline-chart');
    if (!host) { return; }
    var unit = timeline.unit || '';
    HT.chart('timeline-chart', {
      title: (timeline.display || timeline.code) + (unit ? ' (' + unit + ')' : ''),
      tzDate: HT.utcDate,
      scales: { x: { time: true } },
      series: [{ label: 'effective (UTC)' },
               { label: timeline.code + (unit ? ' [' + unit + ']' : ''), stroke: HT.colors.data,
                 width: 1.5, points: { show: true, size: 5 } }],
      axes: [HT.timeAxis(), { label: unit }]
    }, timelineData());
  }

  function timelineRow(p) {
    return HT.el('tr', null, HT.el('td', null, HT.utc(p.effective)), HT.el('td', { 'class': 'num' }, HT.num(p.v)),
                 HT.el('td', null, p.unit || ''), HT.el('td', { 'class': 'src' }, p.source || '—'));
  }

  function loadTimeline() {
    if (!timeline.code) { return Promise.resolve(); }
    var note = document.getElementById('timeline-note');
    return HT.api(base + '/series?limit=5000&code=' + encodeURIComponent(timeline.code)).then(function (s) {
      timeline.points = [];
      s.points.forEach(function (p) {
        var v = p.value_canonical !== null ? p.value_canonical : p.value;
        if (v === null || !p.effective) { return; }
        timeline.unit = p.value_canonical !== null ? p.unit_canonical : p.unit;
        timeline.display = p.display || p.code;
        timeline.points.push({ t: HT.secs(p.effective), v: v, unit: timeline.unit,
                               effective: p.effective, source: p.source });
      });
      drawTimeline();
      var tb = document.querySelector('#timeline-table tbody');
      HT.clear(tb);
      timeline.points.forEach(function (p) { tb.appendChild(timelineRow(p)); });
      note.textContent = timeline.points.length + ' values from ' + base + '/series (current facts, ' +
        'canonical UCUM units)' + (s.truncated ? '; truncated at 5000' : '') + '.';
    }).catch(function (e) { HT.error(note, e); });
  }

  var sel = document.getElementById('timeline-code');
  if (sel) {
    sel.addEventListener('change', function () { timeline.code = sel.value; loadTimeline(); });
  }

  // ------------------------------------------------------------------ forecast
  function runForecast() {
    var btn = document.getElementById('forecast-run');
    var meta = document.getElementById('forecast-meta');
    btn.disabled = true;
    HT.clear(meta);
    meta.appendChild(HT.el('p', null, 'Running the forecast…'));
    var fc;
    HT.api(base + '/glucose/forecast', 'POST', { horizons_min: [15, 30, 45, 60, 90, 120], hours_of_data: 24 })
      .then(function (r) {
        fc = r;
        var since = new Date(Date.parse(r.last_reading_at) - 3 * 3600e3).toISOString();
        var q = GLUCOSE.map(function (c) { return 'code=' + c; }).join('&');
        return HT.api(base + '/series?limit=2000&' + q + '&since=' + encodeURIComponent(since));
      })
      .then(function (s) {
        var last = HT.secs(fc.last_reading_at);
        var rows = [];
        s.points.forEach(function (p) {
          if (p.value_canonical === null || !p.effective) { return; }
          rows.push([HT.secs(p.effective), p.value_canonical, null, null, null]);
        });
        var lastObs = rows.length ? rows[rows.length - 1][1] : null;
        if (rows.length) { var a = rows[rows.length - 1]; a[2] = a[3] = a[4] = lastObs; }
        fc.points.forEach(function (p) {
          rows.push([last + p.horizon_min * 60, null, p.median, p.low, p.high]);
        });
        rows.sort(function (a, b) { return a[0] - b[0]; });
        var data = [0, 1, 2, 3, 4].map(function (i) { return rows.map(function (r) { return r[i]; }); });
        var pct = Math.round(fc.level * 100);
        HT.chart('forecast-chart', {
          title: 'Glucose (mg/dL): readings and forecast, ' + pct + ' % prediction band — SIMULATED',
          tzDate: HT.utcDate,
          scales: { x: { time: true } },
          series: [{ label: 'time (UTC)' },
                   { label: 'measured', stroke: HT.colors.data, points: { show: true, size: 4 } },
                   { label: 'forecast median (simulated)', stroke: HT.colors.median, width: 2, spanGaps: true, dash: [6, 4] },
                   { label: (50 - pct / 2) + ' % (simulated)', stroke: HT.colors.bandLine, spanGaps: true },
                   { label: (50 + pct / 2) + ' % (simulated)', stroke: HT.colors.bandLine, spanGaps: true }],
          bands: [{ series: [4, 3], fill: HT.colors.band }],
          axes: [HT.timeAxis(), { label: 'mg/dL' }]
        }, data);
        HT.meta(meta, [
          ['Result', 'simulated (model output, not a measurement)'],
          ['Model', fc.model + ' ' + fc.model_version],
          ['Seed', fc.seed], ['Input hash', fc.input_hash],
          ['Journal batch', fc.journal_batch],
          ['Data used', fc.readings_used + ' glucose readings, last at ' + HT.utc(fc.last_reading_at) + ' UTC'],
          ['Horizons', fc.points.map(function (p) {
            return p.horizon_min + ' min: ' + HT.num(p.median, 3) + ' [' + HT.num(p.low, 3) + ', ' + HT.num(p.high, 3) + '] mg/dL';
          }).join('; ')],
          ['Assumptions', fc.assumptions.join('; ')]
        ]);
      })
      .catch(function (e) { HT.error(meta, e); })
      .then(function () { btn.disabled = false; });
  }
  var fbtn = document.getElementById('forecast-run');
  if (fbtn) { fbtn.addEventListener('click', runForecast); }

  // ------------------------------------------------------------------ what-if
  function scenarioOf(fs, hours) {
    var get = function (n) { return fs.querySelector('[name=' + n + ']').value.trim(); };
    var meal = Number(get('meal')), at = Number(get('at')), bolus = get('bolus').toLowerCase();
    var s = { name: get('name') || 'scenario', hours: hours, meals: [], boluses: [] };
    if (meal > 0) { s.meals.push([at, meal]); }
    if (bolus === 'auto') { s.boluses.push([at, 'auto']); }
    else if (bolus !== 'none' && bolus !== '' && Number(bolus) > 0) { s.boluses.push([at, Number(bolus)]); }
    return s;
  }

  function runWhatif(ev) {
    ev.preventDefault();
    var form = document.getElementById('whatif-form');
    var out = document.getElementById('whatif-results');
    var meta = document.getElementById('whatif-meta');
    var btn = document.getElementById('whatif-run');
    var hours = Number(document.getElementById('wi-hours').value) || 6;
    var scen = Array.prototype.map.call(form.querySelectorAll('fieldset'), function (fs) { return scenarioOf(fs, hours); });
    btn.disabled = true;
    HT.clear(out); HT.clear(meta);
    out.appendChild(HT.el('p', null, 'Simulating ' + scen.length + ' scenarios…'));
    HT.api(base + '/glucose/whatif', 'POST', { scenarios: scen, step_min: 5, start_glucose: 120 })
      .then(function (r) {
        HT.clear(out);
        var lo = Infinity, hi = -Infinity;
        r.results.forEach(function (s) {
          s.p05.forEach(function (v) { lo = Math.min(lo, v); });
          s.p95.forEach(function (v) { hi = Math.max(hi, v); });
        });
        lo = Math.max(0, Math.floor(lo / 20) * 20); hi = Math.ceil(hi / 20) * 20;
        r.results.forEach(function (s, i) {
          var id = 'whatif-chart-' + i;
          var fig = HT.el('figure', { 'class': 'whatif-result', 'data-scenario': s.name },
            HT.el('figcaption', null, s.name + ' ', HT.el('span', { 'class': 'sim' }, 'simulated')),
            HT.el('div', { id: id, 'class': 'chart', role: 'img',
                           'aria-label': 'What-if ' + s.name + ': median and 5-95 % band of glucose (simulated)' }),
            HT.el('p', { 'class': 'note' }, 'End of horizon: median ' + HT.num(s.p50[s.p50.length - 1], 3) +
                  ' mg/dL [5 %: ' + HT.num(s.p05[s.p05.length - 1], 3) + ', 95 %: ' + HT.num(s.p95[s.p95.length - 1], 3) + ']'));
          out.appendChild(fig);
          HT.chart(id, {
            width: 520, height: 260,
            title: s.name + ' — SIMULATED',
            scales: { x: { time: false }, y: { range: [lo, hi] } },
            series: [{ label: 'min from now' },
                     { label: 'median', stroke: HT.colors.median, width: 2 },
                     { label: '5 %', stroke: HT.colors.bandLine },
                     { label: '95 %', stroke: HT.colors.bandLine }],
            bands: [{ series: [3, 2], fill: HT.colors.band }],
            axes: [{ label: 'minutes from now' }, { label: 'mg/dL' }]
          }, [s.t_min, s.p50, s.p05, s.p95]);
        });
        HT.meta(meta, [
          ['Result', 'simulated (model output, not a measurement)'],
          ['Model', r.model + ' ' + r.model_version], ['Seed', r.seed],
          ['Input hash', r.input_hash], ['Journal batch', r.journal_batch],
          ['Personalised from', r.personalised_from_readings + ' glucose readings'],
          ['Assumptions', r.assumptions.join('; ')]
        ]);
      })
      .catch(function (e) { HT.error(out, e); })
      .then(function () { btn.disabled = false; });
  }
  var wform = document.getElementById('whatif-form');
  if (wform) { wform.addEventListener('submit', runWhatif); }

  // ------------------------------------------------------------------ live (SSE)
  function updateState(v, when, rid) {
    var tb = document.querySelector('#state tbody');
    var row = tb.querySelector('tr[data-code="' + CSS.escape(v.code) + '"]');
    if (!row) {
      row = HT.el('tr', { 'data-code': v.code }, HT.el('th', { scope: 'row' }, v.code),
        HT.el('td', { 'class': 'num', 'data-field': 'value' }), HT.el('td', { 'data-field': 'unit' }),
        HT.el('td', { 'data-field': 'effective' }), HT.el('td', { 'data-field': 'age' }),
        HT.el('td', { 'class': 'src', 'data-field': 'source' }), HT.el('td', { 'data-field': 'flags' }));
      tb.insertBefore(row, tb.firstChild);
    }
    var set = function (f, text) { row.querySelector('[data-field=' + f + ']').textContent = text; };
    set('value', HT.num(v.value));
    set('unit', v.unit || '');
    set('effective', HT.utc(v.effective));
    set('age', 'live, recorded ' + HT.utc(when) + ' UTC');
    set('source', rid + ' (live)');
    set('flags', '');
    row.classList.add('updated');
  }

  function onChange(d) {
    (d.values || []).forEach(function (v) {
      if (v.value === null || v.value === undefined) { return; }
      updateState(v, d.recorded_at, d.rid);
      if (v.code === timeline.code && v.effective) {
        timeline.points.push({ t: HT.secs(v.effective), v: v.value, unit: v.unit, effective: v.effective, source: d.rid });
        var u = HT.charts['timeline-chart'];
        if (u) { u.setData(timelineData()); } else { drawTimeline(); }
        var tb = document.querySelector('#timeline-table tbody');
        if (tb) { tb.appendChild(timelineRow(timeline.points[timeline.points.length - 1])); }
      }
    });
    var log = document.getElementById('live-log');
    log.insertBefore(HT.el('li', null, HT.utc(d.recorded_at) + ' UTC: ' + d.event + ' ' + d.rid + ' ' +
      (d.values || []).map(function (v) { return v.code + ' = ' + HT.num(v.value) + ' ' + (v.unit || ''); }).join(', ')), log.firstChild);
    var n = document.getElementById('event-count');
    n.textContent = String(Number(n.textContent) + 1);
  }

  // A live alert extends the newest episode when it is live and at the same level.
  function onAlert(d) {
    var ul = document.getElementById('alerts');
    var none = ul.querySelector('.none');
    if (none) { ul.removeChild(none); }
    var top = ul.firstElementChild;
    var low = d.level.indexOf('low') >= 0;
    if (top && top.getAttribute('data-live') === '1' && top.getAttribute('data-level') === d.level) {
      var n = Number(top.getAttribute('data-n')) + 1;
      var ext = Number(top.getAttribute('data-value'));
      ext = low ? Math.min(ext, d.value) : Math.max(ext, d.value);
      top.setAttribute('data-n', String(n));
      top.setAttribute('data-value', String(ext));
      HT.clear(top);
      top.appendChild(HT.el('strong', null, d.level));
      top.appendChild(document.createTextNode(' ' + HT.num(ext, 3) + ' mg/dL (' + (low ? 'lowest' : 'highest') +
        ' of ' + n + ' live readings, latest ' + HT.num(d.value, 3) + ' at ' + HT.utc(d.effective) + ' UTC)'));
      return;
    }
    ul.insertBefore(HT.el('li', { 'class': 'alert-' + d.level, 'data-live': '1', 'data-level': d.level,
                                  'data-n': '1', 'data-value': String(d.value) }, HT.el('strong', null, d.level),
      ' ' + HT.num(d.value, 3) + ' mg/dL at ' + HT.utc(d.effective) + ' UTC (live)'), ul.firstChild);
  }

  function connect() {
    var status = document.getElementById('live-status');
    var es = new EventSource(base + '/events');
    HT.events = es;
    es.addEventListener('ready', function () { status.textContent = 'Live updates: connected'; status.classList.add('on'); });
    es.addEventListener('record.changed', function (e) { onChange(JSON.parse(e.data)); });
    es.addEventListener('alert', function (e) { onAlert(JSON.parse(e.data)); });
    es.onerror = function () { status.textContent = 'Live updates: reconnecting…'; status.classList.remove('on'); };
  }

  loadTimeline().then(function () {
    connect();
    if (fbtn && Number(main.getAttribute('data-glucose')) >= 3) { runForecast(); }
  });
})();
