// Facility page: forecast bands from the census, scenario comparison. Data from the REST API.
(function () {
  'use strict';
  var HT = window.healthtwin;
  var main = document.getElementById('main');
  var twin = main.getAttribute('data-twin');
  var spec = main.getAttribute('data-spec');
  var bands = [];

  function drawBands() {
    var q = document.getElementById('ffc-quantity').value;
    var rows = bands.filter(function (b) { return b.quantity === q; })
      .sort(function (a, b) { return a.horizon_h - b.horizon_h; });
    HT.chart('ffc-chart', {
      title: q + ' by horizon: mean and 5-95 % band — SIMULATED',
      scales: { x: { time: false } },
      series: [{ label: 'hours ahead' },
               { label: 'mean (simulated)', stroke: HT.colors.median, width: 2, points: { show: true } },
               { label: '5 %', stroke: HT.colors.bandLine },
               { label: '95 %', stroke: HT.colors.bandLine }],
      bands: [{ series: [3, 2], fill: HT.colors.band }],
      axes: [{ label: 'hours ahead' }, { label: q }]
    }, [rows.map(function (b) { return b.horizon_h; }), rows.map(function (b) { return b.mean; }),
        rows.map(function (b) { return b.p05; }), rows.map(function (b) { return b.p95; })]);
  }

  function runForecast(ev) {
    if (ev) { ev.preventDefault(); }
    var meta = document.getElementById('ffc-meta');
    var btn = document.getElementById('ffc-run');
    btn.disabled = true;
    HT.clear(meta);
    meta.appendChild(HT.el('p', null, 'Simulating from the census…'));
    HT.api('/twins/' + twin + '/facility/forecast', 'POST', { spec: spec, hours: [1, 2, 4, 8, 12, 24], replications: 10 })
      .then(function (r) {
        bands = r.bands;
        var sel = document.getElementById('ffc-quantity');
        var keep = sel.value;
        var qs = [];
        bands.forEach(function (b) { if (qs.indexOf(b.quantity) < 0) { qs.push(b.quantity); } });
        HT.clear(sel);
        qs.forEach(function (q) { sel.appendChild(HT.el('option', { value: q }, q)); });
        if (qs.indexOf(keep) >= 0) { sel.value = keep; }
        drawBands();
        var tb = document.querySelector('#ffc-table tbody');
        HT.clear(tb);
        bands.forEach(function (b) {
          tb.appendChild(HT.el('tr', null, HT.el('td', { 'class': 'num' }, HT.num(b.horizon_h)), HT.el('td', null, b.quantity),
            HT.el('td', { 'class': 'num' }, HT.num(b.mean, 3)), HT.el('td', { 'class': 'num' }, HT.num(b.p05, 3)),
            HT.el('td', { 'class': 'num' }, HT.num(b.p95, 3))));
        });
        HT.meta(meta, [
          ['Result', 'simulated (model output, not a measurement)'],
          ['Model', r.model + ' ' + r.model_version + ', spec ' + r.spec],
          ['Census', r.census_patients + ' patients at ' + HT.utc(r.census_at) + ' UTC'],
          ['Seed', r.seed], ['Input hash', r.input_hash], ['Journal batch', r.journal_batch]
        ]);
      })
      .catch(function (e) { HT.error(meta, e); })
      .then(function () { btn.disabled = false; });
  }

  function runCompare(ev) {
    ev.preventDefault();
    var meta = document.getElementById('cmp-meta');
    var btn = document.getElementById('cmp-run');
    var table = document.getElementById('cmp-table');
    btn.disabled = true;
    HT.clear(meta);
    meta.appendChild(HT.el('p', null, 'Simulating base and scenario…'));
    HT.api('/ui/twins/' + twin + '/compare', 'POST', {
      spec: spec, station: document.getElementById('cmp-station').value,
      extra: Number(document.getElementById('cmp-extra').value),
      horizon_days: Number(document.getElementById('cmp-days').value), replications: 5
    }).then(function (r) {
      var tb = table.querySelector('tbody');
      HT.clear(tb);
      r.kpis.forEach(function (k) {
        tb.appendChild(HT.el('tr', null, HT.el('th', { scope: 'row' }, k.kpi),
          HT.el('td', { 'class': 'num' }, HT.num(k.base_mean, 3)), HT.el('td', { 'class': 'num' }, HT.num(k.scenario_mean, 3)),
          HT.el('td', { 'class': 'num' }, HT.num(k.diff_mean, 3) + (k.significant ? ' *' : '')),
          HT.el('td', { 'class': 'num' }, '[' + HT.num(k.diff_low, 3) + ', ' + HT.num(k.diff_high, 3) + ']')));
      });
      table.hidden = false;
      HT.meta(meta, [
        ['Result', 'simulated; * = 95 % interval excludes 0'],
        ['Scenario', r.scenario + ' (spec ' + r.spec + ', ' + r.horizon_days + ' days, ' + r.replications + ' paired replications)'],
        ['Model', r.model + ' ' + r.model_version], ['Seed', r.seed],
        ['Input hash', r.input_hash], ['Journal batch', r.journal_batch]
      ]);
    }).catch(function (e) { HT.error(meta, e); })
      .then(function () { btn.disabled = false; });
  }

  var f = document.getElementById('ffc-form');
  if (f) {
    f.addEventListener('submit', runForecast);
    document.getElementById('ffc-quantity').addEventListener('change', function () { if (bands.length) { drawBands(); } });
    runForecast();
  }
  var c = document.getElementById('cmp-form');
  if (c) { c.addEventListener('submit', runCompare); }
})();
