// Turbofan Tycoon: the replay page (form, chart, table, factories) and the model page.
// Everything is computed on the server (GET /tycoon/api/...); this file only draws.
(function () {
  "use strict";

  var COLOURS = {
    corrective: "#b23a48", preventive: "#c27c0e", local: "#1f5fa8",
    federated: "#2a8a4a", centralised: "#555f6b"
  };
  // Charts stay here: no button that sends them to a cloud service or an outside editor.
  var PLOT_CONFIG = {
    responsive: true,
    displaylogo: false,
    showSendToCloud: false,
    showEditInChartStudio: false,
    modeBarButtonsToRemove: ["sendDataToCloud", "editInChartStudio"]
  };

  function money(value) {
    var sign = value < 0 ? "−$" : "$";
    return sign + Math.abs(Math.round(value)).toLocaleString("en-US");
  }

  function cents(value) {
    return (value < 0 ? "−$" : "$") + Math.abs(value).toFixed(2);
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : (100 * value).toFixed(1) + " %";
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function labelled(td, label) {
    td.dataset.label = label;  // a phone shows each row as a card of labelled cells
    return td;
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  // --- the replay page -------------------------------------------------------------

  function Tycoon(form) {
    this.form = form;
    this.error = document.getElementById("tycoon-error");
    this.status = document.getElementById("tycoon-status");
    this.request = null;
    this.data = null;
    this.fleet = new Fleet(this);
    this.bind();
    this.refresh();
  }

  Tycoon.prototype.bind = function () {
    var self = this;
    var later = debounce(function () { self.refresh(); }, 120);
    Array.prototype.forEach.call(this.form.querySelectorAll("input[type=range]"), function (slider) {
      var number = document.getElementById(slider.dataset.for);
      slider.addEventListener("input", function () { number.value = slider.value; later(); });
      number.addEventListener("input", function () {
        if (number.value !== "") { slider.value = number.value; }
        later();
      });
    });
    var site = document.getElementById("id_site");
    if (site) { site.addEventListener("change", function () { self.refresh(); }); }
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.refresh();
    });
    document.getElementById("reset").addEventListener("click", function () {
      // The original's settings, whatever the address brought.
      Array.prototype.forEach.call(self.form.querySelectorAll("input"), function (input) {
        input.value = input.dataset.default !== undefined ? input.dataset.default : input.defaultValue;
      });
      Array.prototype.forEach.call(self.form.querySelectorAll("select"), function (select) {
        select.selectedIndex = 0;
      });
      self.refresh();
    });
  };

  Tycoon.prototype.query = function () {
    var params = new URLSearchParams();
    new FormData(this.form).forEach(function (value, name) { params.append(name, value); });
    return params.toString();
  };

  Tycoon.prototype.refresh = function () {
    var self = this;
    if (this.request) { this.request.abort(); }  // only the latest settings matter
    var controller = new AbortController();
    this.request = controller;
    this.status.textContent = "Replaying …";
    var started = performance.now();
    fetch(this.form.action + "?" + this.query(), { signal: controller.signal })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (answer) {
        if (!answer.ok) { self.showError(answer.body); return; }
        self.showError(null);
        self.data = answer.body;
        self.draw();
        self.status.textContent = "Replayed " + answer.body.pool.engines + " " +
          answer.body.pool.subset + " engines in " + Math.round(performance.now() - started) + " ms.";
      })
      .catch(function (error) {
        if (error.name !== "AbortError") { self.status.textContent = "The replay failed: " + error; }
      });
  };

  Tycoon.prototype.showError = function (body) {
    Array.prototype.forEach.call(this.form.querySelectorAll("[aria-invalid]"), function (input) {
      input.removeAttribute("aria-invalid");
    });
    // Results of earlier settings stay readable, greyed, until a setting works again.
    var stale = Boolean(body) && Boolean(this.data);
    document.getElementById("results").classList.toggle("stale", stale);
    document.getElementById("stale-note").hidden = !stale;
    document.getElementById("bottom-line").classList.toggle("stale", stale);
    if (!body) { this.error.hidden = true; this.error.textContent = ""; return; }
    this.error.hidden = false;
    this.error.textContent = body.error;
    this.status.textContent = "";
    var input = body.parameter && document.getElementById("id_" + body.parameter);
    if (input) { input.setAttribute("aria-invalid", "true"); }
  };

  Tycoon.prototype.draw = function () {
    var line = this.data.bottom_line;
    document.getElementById("bottom-line").textContent = line ? line.sentence :
      "The bottom line needs a federated and a local model in the pack.";
    this.drawChart();
    this.drawTable();
    this.drawJoining();
    this.fleet.load(this.data);
  };

  Tycoon.prototype.drawChart = function () {
    var data = this.data;
    var traces = data.strategies.map(function (row) {
      return {
        x: data.curve.cycles, y: data.curve.profit[row.key], name: row.label, mode: "lines",
        line: { color: COLOURS[row.key], width: row.oracle ? 2 : 2.5, dash: row.oracle ? "dash" : "solid" },
        hovertemplate: "%{y:$,.0f} after %{x} cycles<extra>" + row.label + "</extra>"
      };
    });
    var layout = {
      margin: { t: 10, r: 10, b: 50, l: 80 },
      xaxis: { title: { text: "cycle" } },
      yaxis: { title: { text: "cumulative profit ($)" }, tickformat: "$,.2s" },
      legend: { orientation: "h", y: -0.2 },
      hovermode: "x unified"
    };
    Plotly.react("profit-chart", traces, layout, PLOT_CONFIG);
  };

  Tycoon.prototype.drawTable = function () {
    var body = document.querySelector("#profit-table tbody");
    body.textContent = "";
    this.data.strategies.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.dataset.strategy = row.key;
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = row.label;
      tr.appendChild(th);
      var vs = row.vs_corrective;
      labelled(cell(tr, money(row.profit), "number profit"), "Profit");
      labelled(cell(tr, row.key === "corrective" ? "—" : money(vs.difference) + " (" +
        money(vs.low) + " to " + money(vs.high) + ")", "number versus"), "Against corrective");
      labelled(cell(tr, cents(row.profit_per_engine_cycle), "number per-cycle"),
        "Profit per engine-cycle");
      labelled(cell(tr, percent(row.savings_vs_corrective), "number savings"),
        "Savings vs corrective");
      labelled(cell(tr, percent(row.uptime), "number uptime"), "Uptime");
      labelled(cell(tr, row.failures.toLocaleString("en-US"), "number failures"), "Failures");
      labelled(cell(tr, row.maintenances.toLocaleString("en-US"), "number maintenances"),
        "Maintenances");
      labelled(cell(tr, row.life_wasted.toLocaleString("en-US") +
        (row.maintenances ? " (" + row.life_wasted_per_maintenance + " each)" : ""),
        "number wasted"), "Life wasted (cycles)");
      body.appendChild(tr);
    });
    var missing = this.data.missing;
    document.getElementById("missing").textContent = missing.length ?
      "Not in the pack, so not replayed: " + missing.join(", ") + "." : "";
  };

  Tycoon.prototype.drawJoining = function () {
    var joining = this.data.joining;
    var summary = document.getElementById("joining-summary");
    var body = document.querySelector("#joining-table tbody");
    body.textContent = "";
    if (!joining) {
      summary.textContent = "Needs a federated model and the site's own model in the pack.";
      return;
    }
    var p = this.data.parameters;
    summary.textContent = "With the federation's model instead of its own, " + joining.site +
      "'s factory of " + p.fleet_size + " engines earns " + money(Math.abs(joining.worth)) +
      (joining.worth >= 0 ? " more" : " less") + " over " +
      p.horizon.toLocaleString("en-US") + " cycles (" + money(joining.federated) + " against " +
      money(joining.local) + ").";
    joining.sites.forEach(function (row) {
      var tr = document.createElement("tr");
      if (row.site === joining.site) { tr.className = "chosen"; }
      cell(tr, row.site);
      cell(tr, money(row.local), "number");
      cell(tr, money(row.worth), "number worth");
      cell(tr, money(row.mean) + " (" + money(row.low) + " to " + money(row.high) + ")",
        "number worth-interval");
      body.appendChild(tr);
    });
  };

  // --- the factories: a play/pause animation of the replay ------------------------

  function Fleet(tycoon) {
    this.root = document.getElementById("fleet");
    this.play = document.getElementById("play");
    this.speed = document.getElementById("speed");
    this.scrub = document.getElementById("scrub");
    this.clock = document.getElementById("clock");
    this.time = 0;
    this.playing = false;
    this.last = null;
    this.data = null;
    var self = this;
    this.play.addEventListener("click", function () { self.toggle(); });
    this.scrub.addEventListener("input", function () {
      self.time = Number(self.scrub.value);
      self.render();
    });
    this.tick = this.tick.bind(this);
  }

  Fleet.prototype.load = function (data) {
    this.data = data;
    this.horizon = data.parameters.horizon;
    this.time = Math.min(this.time, this.horizon);
    this.scrub.max = String(this.horizon);
    this.build();
    this.render();
  };

  Fleet.prototype.build = function () {
    var self = this;
    var data = this.data;
    this.root.textContent = "";
    this.factories = data.strategies.map(function (row) {
      var factory = document.createElement("section");
      factory.className = "factory";
      factory.style.borderColor = COLOURS[row.key];
      var title = document.createElement("h3");
      title.textContent = row.label;
      var cash = document.createElement("p");
      cash.className = "cash";
      var engines = document.createElement("div");
      engines.className = "engines";
      var tiles = [];
      for (var slot = 0; slot < data.fleet.slots; slot++) {
        var tile = document.createElement("div");
        tile.className = "engine";
        var bar = document.createElement("span");
        bar.className = "life";
        var label = document.createElement("span");
        label.className = "engine-label";
        tile.appendChild(bar);
        tile.appendChild(label);
        engines.appendChild(tile);
        tiles.push({ tile: tile, bar: bar, label: label });
      }
      factory.appendChild(title);
      factory.appendChild(cash);
      factory.appendChild(engines);
      self.root.appendChild(factory);
      return { key: row.key, cash: cash, tiles: tiles, episodes: self.bySlot(row.key) };
    });
    if (data.parameters.fleet_size > data.fleet.slots) {
      var note = document.createElement("p");
      note.className = "note";
      note.textContent = "Showing " + data.fleet.slots + " of each factory's " +
        data.parameters.fleet_size + " engines; the money is the whole factory's.";
      this.root.appendChild(note);
    }
  };

  Fleet.prototype.bySlot = function (key) {
    var slots = [];
    for (var i = 0; i < this.data.fleet.slots; i++) { slots.push([]); }
    this.data.fleet.episodes[key].forEach(function (e) { slots[e[0]].push(e); });
    return slots;  // each slot's episodes, by start
  };

  Fleet.prototype.toggle = function () {
    this.playing = !this.playing;
    if (this.playing && this.time >= this.horizon) { this.time = 0; }
    this.play.textContent = this.playing ? "Pause" : "Play";
    this.play.setAttribute("aria-pressed", String(this.playing));
    this.last = null;
    if (this.playing) { requestAnimationFrame(this.tick); }
  };

  Fleet.prototype.tick = function (now) {
    if (!this.playing) { return; }
    if (this.last !== null) {
      this.time = Math.min(this.horizon, this.time + (now - this.last) / 1000 * Number(this.speed.value));
    }
    this.last = now;
    this.render();
    if (this.time >= this.horizon) { this.toggle(); return; }
    requestAnimationFrame(this.tick);
  };

  Fleet.prototype.profitAt = function (key, t) {
    var cycles = this.data.curve.cycles;
    var profit = this.data.curve.profit[key];
    var hi = 1;
    while (hi < cycles.length - 1 && cycles[hi] < t) { hi++; }
    var lo = hi - 1;
    var span = cycles[hi] - cycles[lo] || 1;
    return profit[lo] + (profit[hi] - profit[lo]) * Math.min(1, Math.max(0, (t - cycles[lo]) / span));
  };

  Fleet.prototype.render = function () {
    if (!this.data) { return; }
    var self = this;
    var t = Math.floor(this.time);
    var fleet = this.data.fleet;
    this.scrub.value = String(t);
    this.clock.textContent = t.toLocaleString("en-US") + " / " + this.horizon.toLocaleString("en-US");
    this.factories.forEach(function (factory) {
      factory.cash.textContent = money(self.profitAt(factory.key, t));
      factory.tiles.forEach(function (view, slot) {
        self.drawEngine(view, current(factory.episodes[slot], t), t, fleet);
      });
    });
  };

  function current(episodes, t) {
    var found = null;
    for (var i = 0; i < episodes.length && episodes[i][1] <= t; i++) { found = episodes[i]; }
    return found;
  }

  Fleet.prototype.drawEngine = function (view, episode, t, fleet) {
    if (!episode) { view.tile.className = "engine idle"; view.label.textContent = ""; return; }
    var start = episode[1], run = episode[2], maintained = episode[3] === 1, engine = episode[4];
    var life = fleet.lives[engine];
    var age = t - start;
    var state, text;
    if (age < run) {
      state = "running";
      text = "#" + fleet.units[engine] + " · age " + age;
      view.bar.style.width = (100 * (life - age) / life).toFixed(0) + "%";
    } else {
      state = maintained ? "maintenance" : "failed";
      text = maintained ? "maintenance" : "broken down";
      view.bar.style.width = "0";
    }
    view.tile.className = "engine " + state;
    view.label.textContent = text;
  };

  // --- the model page --------------------------------------------------------------

  function ModelPage(root) {
    this.root = root;
    this.status = document.getElementById("models-status");
    this.engine = document.getElementById("id_engine");
    this.threshold = document.getElementById("id_threshold");
    var self = this;
    fetch(root.dataset.modelsUrl).then(function (r) { return r.json(); }).then(function (data) {
      self.data = data;
      self.drawScatter();
      self.drawTable();
      self.drawErrors();
      self.fillEngines();
      self.loadTrajectory();
    });
    this.engine.addEventListener("change", function () { self.loadTrajectory(); });
    this.threshold.addEventListener("input", debounce(function () { self.drawTrajectory(); }, 100));
  }

  var SITE_COLOURS = ["#1f5fa8", "#6a3d9a", "#b15928", "#0f8b8d", "#8c564b", "#e377c2"];

  ModelPage.prototype.colour = function (model, i) {
    return model.kind === "local" ? SITE_COLOURS[i % SITE_COLOURS.length] : COLOURS[model.kind];
  };

  ModelPage.prototype.drawScatter = function () {
    var self = this;
    var grid = document.getElementById("scatter-grid");
    grid.textContent = "";
    var cap = this.data.rul_cap;
    this.data.models.forEach(function (model, i) {
      if (!model.test) { return; }
      var div = document.createElement("div");
      div.className = "chart-small";
      div.setAttribute("role", "img");
      div.setAttribute("aria-label", model.label + ": predicted against true RUL, RMSE " + model.test.rmse);
      grid.appendChild(div);
      var capped = model.test.true.map(function (v) { return Math.min(v, cap); });
      Plotly.newPlot(div, [
        { x: capped, y: model.test.predicted, mode: "markers", name: "engines",
          marker: { color: self.colour(model, i), size: 6, opacity: 0.7 } },
        { x: [0, cap], y: [0, cap], mode: "lines", name: "perfect", line: { color: "#999", dash: "dot" } }
      ], {
        title: { text: model.label + "<br><sub>RMSE " + model.test.rmse + "</sub>", font: { size: 13 } },
        margin: { t: 50, r: 10, b: 45, l: 50 }, showlegend: false,
        xaxis: { title: { text: "true RUL (capped)" }, range: [0, cap + 5] },
        yaxis: { title: { text: "predicted" }, range: [0, cap + 5] }
      }, { responsive: true, displayModeBar: false });
    });
  };

  ModelPage.prototype.drawTable = function () {
    var body = document.querySelector("#model-table tbody");
    this.data.models.forEach(function (model) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = model.label;
      tr.appendChild(th);
      cell(tr, model.test ? model.test.rmse : "—", "number");
      cell(tr, model.test ? model.test.rmse_strict : "—", "number");
      cell(tr, model.test ? model.test.score : "—", "number");
      cell(tr, model.source + (model.trained_on_holdout ? " (trained on the replayed engines too)" : ""));
      body.appendChild(tr);
    });
  };

  ModelPage.prototype.drawErrors = function () {
    var self = this;
    var cap = this.data.rul_cap;
    var traces = this.data.models.filter(function (m) { return m.test; }).map(function (model, i) {
      return {
        x: model.test.predicted.map(function (p, j) { return p - Math.min(model.test.true[j], cap); }),
        type: "histogram", name: model.label, opacity: 0.55, xbins: { size: 5 },
        marker: { color: self.colour(model, i) }
      };
    });
    Plotly.newPlot("error-chart", traces, {
      barmode: "overlay", margin: { t: 10, r: 10, b: 50, l: 50 },
      xaxis: { title: { text: "predicted − true RUL (cycles): late maintenance on the right" } },
      yaxis: { title: { text: "engines" } }, legend: { orientation: "h", y: -0.25 }
    }, PLOT_CONFIG);
  };

  ModelPage.prototype.fillEngines = function () {
    var self = this;
    var groups = [["holdout", "Held-out engines (ran to failure, replayed)"], ["test", "Test engines"]];
    groups.forEach(function (group) {
      var engines = self.data.engines[group[0]];
      if (!engines.length) { return; }
      var optgroup = document.createElement("optgroup");
      optgroup.label = group[1];
      engines.forEach(function (engine, i) {
        var option = document.createElement("option");
        option.value = group[0] + ":" + i;
        option.textContent = group[0] === "holdout" ?
          "unit " + engine.unit + " (life " + engine.life + ")" : "test unit " + engine;
        optgroup.appendChild(option);
      });
      self.engine.appendChild(optgroup);
    });
  };

  ModelPage.prototype.loadTrajectory = function () {
    var self = this;
    var parts = this.engine.value.split(":");
    var url = this.root.dataset.trajectoryUrl + "?set=" + parts[0] + "&engine=" + parts[1];
    fetch(url).then(function (r) { return r.json(); }).then(function (data) {
      self.trajectory = data;
      self.drawTrajectory();
    });
  };

  ModelPage.prototype.drawTrajectory = function () {
    var data = this.trajectory;
    if (!data) { return; }
    var self = this;
    var threshold = Number(this.threshold.value) || 0;
    var traces = [
      { x: data.cycles, y: data.true_rul_capped, name: "true RUL (capped)", mode: "lines",
        line: { color: "#000", dash: "dot" } }
    ];
    var notes = [];
    this.data.models.forEach(function (model, i) {
      var predicted = data.predicted[model.key];
      traces.push({ x: data.cycles, y: predicted, name: model.label, mode: "lines",
        line: { color: self.colour(model, i) } });
      var first = predicted.findIndex(function (p) { return p < threshold; });
      if (first >= 0) {
        traces.push({ x: [data.cycles[first]], y: [predicted[first]], mode: "markers", showlegend: false,
          name: model.label + " maintains", marker: { color: self.colour(model, i), size: 11, symbol: "x" } });
        notes.push(model.label + ": maintains after cycle " + data.cycles[first] +
          " (true RUL " + data.true_rul[first] + ")");
      } else {
        notes.push(model.label + ": never below the threshold");
      }
    });
    traces.push({ x: [1, data.cycles.length], y: [threshold, threshold], mode: "lines",
      name: "threshold", line: { color: "#b23a48", dash: "dash" } });
    Plotly.react("trajectory-chart", traces, {
      margin: { t: 10, r: 10, b: 50, l: 50 }, legend: { orientation: "h", y: -0.25 },
      xaxis: { title: { text: "cycle" } }, yaxis: { title: { text: "RUL (cycles)" } }
    }, PLOT_CONFIG);
    this.status.textContent = notes.join("; ") + ".";
  };

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("tycoon-form");
    if (form) { new Tycoon(form); }
    var models = document.getElementById("models-root");
    if (models) { new ModelPage(models); }
  });
})();
