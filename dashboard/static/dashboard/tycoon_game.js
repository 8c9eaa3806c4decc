// Turbofan Tycoon, the game: your factory against three rivals, hour by hour.
//
// The server hands over everything at the start (GET /tycoon/api/game): the settings,
// the engines (lives, sensors, each model's predicted RUL after every hour) and the
// engine sequence of the seed. Every factory's k-th engine in a slot is the same
// engine, so the factories differ only by their strategies. The rules are those of the
// analyst replay (turbofan/tycoon.py): a rival that keeps one strategy earns, hour for
// hour, what the analyst view shows for that strategy.
//
// The model (Game) is plain numbers; the views draw it once per animation frame on
// canvases, so the page keeps up at top speed.
(function () {
  "use strict";

  var SPEEDS = [1, 3, 10, 30, 60, 120, 250, 500];  // hours per second
  var DEFAULT_SPEED = 3;
  var MAX_HOURS_PER_FRAME = 100;
  var FACTORY_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"];
  var STATE_COLOURS = ["#56b870", "#f2d024", "#e04b4b"];  // running, maintenance, repair
  var FLASH_HOURS = 10;
  var RUNNING = 0, MAINTENANCE = 1, REPAIR = 2;
  var STRIP_HOURS = 400;  // the status strip's memory
  var SPARK_HOURS = 80;   // the sensor sparklines' window
  var SKIP_HOURS = 1000;

  function money(value) {
    return (value < 0 ? "−$" : "$") + Math.abs(Math.round(value)).toLocaleString("en-US");
  }

  function whole(value) {
    return Math.round(value).toLocaleString("en-US");
  }

  function decode(b64, Type) {
    var text = atob(b64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    return new Type(bytes.buffer);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // --- the model ---------------------------------------------------------------------

  function Pool(pool) {
    this.units = pool.units;
    this.lives = Int32Array.from(pool.lives);
    this.offsets = Int32Array.from(pool.offsets);
    this.rulCap = pool.rul_cap;
    this.predicted = {};
    for (var kind in pool.predicted) { this.predicted[kind] = decode(pool.predicted[kind], Float32Array); }
    this.sensorNames = pool.sensors ? pool.sensors.names : [];
    this.sensors = pool.sensors ? decode(pool.sensors.data, Uint8Array) : null;
  }

  // The predicted RUL of ``engine`` after ``age`` hours by model ``kind`` (NaN outside).
  Pool.prototype.prediction = function (kind, engine, age) {
    if (age < 1 || age > this.lives[engine]) { return NaN; }
    return this.predicted[kind][this.offsets[engine] + age - 1];
  };

  function Game(answer) {
    var s = answer.settings;
    this.answer = answer;
    this.settings = s;
    this.pool = new Pool(answer.pool);
    this.slots = answer.sequence.slots;
    this.rows = answer.sequence.rows;
    this.sequence = decode(answer.sequence.data, Int32Array);
    this.maxHours = answer.max_hours;
    this.ladder = answer.ladder;
    this.labels = {};
    var self = this;
    answer.strategies.forEach(function (row) { self.labels[row.key] = row.label; });
    // Predictions are float32, and the analyst replay compares them in float32 too.
    this.threshold = Math.fround(s.rul_threshold);
    this.hour = 0;
    this.finished = null;      // {hour, winner} once a factory reaches the target
    this.keepPlaying = false;  // after the end: play on
    this.exhausted = false;    // the engine sequence (or the game's length) ran out
    this.unlocked = { corrective: 0 };
    this.autoUpgrade = false;
    this.pending = [];         // strategies unlocked and not yet offered to the player
    this.events = [];          // the latest events, newest last
    this.factories = [this.factory("Your factory", "corrective", true)];
    answer.rivals.forEach(function (rival) {
      self.factories.push(self.factory(rival.name, rival.strategy, false));
    });
    // Every engine's run, [slot, row, engine, start, run, maintained], kept only when
    // asked (the browser tests compare them with the analyst replay's rules).
    this.recordEpisodes = false;
    this.episodes = this.factories.map(function () { return []; });
    this.unlock();  // what needs no failure and no wait is there from the first hour
  }

  Game.prototype.factory = function (name, strategy, you) {
    var size = this.maxHours + 1;
    var slots = [];
    for (var s = 0; s < this.slots; s++) {
      slots.push({
        row: 0, engine: this.sequence[s], age: 0, start: 0, down: 0, downKind: RUNNING,
        strategy: strategy, strip: new Uint8Array(STRIP_HOURS), changes: []
      });
    }
    return {
      name: name, you: you, strategy: strategy, history: [[strategy, 0]],
      cycles: 0, maintenances: 0, failures: 0, profit: new Float64Array(size),
      hoursOn: {}, lastMaintenance: -Infinity, lastFailure: -Infinity, slots: slots
    };
  };

  Game.prototype.profitOf = function (f) {
    var s = this.settings;
    return s.revenue_per_cycle * f.cycles - s.maintenance_cost * f.maintenances -
      s.failure_cost * f.failures;
  };

  // Does ``strategy`` maintain ``engine`` after ``age`` hours? (It fails first at its life.)
  Game.prototype.maintains = function (strategy, engine, age) {
    if (strategy === "corrective") { return false; }
    if (strategy === "preventive") { return age >= this.settings.preventive_age; }
    return this.pool.prediction(strategy, engine, age) < this.threshold;
  };

  Game.prototype.setStrategy = function (fi, strategy) {
    var f = this.factories[fi];
    if (f.strategy === strategy) { return; }
    f.strategy = strategy;
    f.history.push([strategy, this.hour]);
    var self = this;
    f.slots.forEach(function (slot) {  // running turbofans follow now, the others when back
      if (slot.down === 0) {
        slot.strategy = strategy;
        slot.changes.push(self.hour);
      }
    });
    this.event(f.name + " switched to " + this.labels[strategy].toLowerCase() + " maintenance.");
  };

  Game.prototype.event = function (text, hour) {
    this.events.push("Hour " + whole(hour === undefined ? this.hour : hour) + ": " + text);
    if (this.events.length > 20) { this.events.shift(); }
  };

  // One hour of every factory. Returns false when the game cannot go on.
  Game.prototype.tick = function () {
    if (this.hour >= this.maxHours || this.exhausted) { this.exhausted = true; return false; }
    var s = this.settings;
    var hour = this.hour + 1;
    for (var fi = 0; fi < this.factories.length; fi++) {
      var f = this.factories[fi];
      f.hoursOn[f.strategy] = (f.hoursOn[f.strategy] || 0) + 1;
      for (var si = 0; si < f.slots.length; si++) {
        var slot = f.slots[si];
        var state = RUNNING;
        if (slot.down > 0) {
          state = slot.downKind;
          slot.down -= 1;
          if (slot.down === 0) { this.nextEngine(slot, si, hour); }
        } else {
          if (slot.strategy !== f.strategy) {  // back from downtime: the factory's strategy
            slot.strategy = f.strategy;
            slot.changes.push(this.hour);
          }
          slot.age += 1;
          f.cycles += 1;
          var life = this.pool.lives[slot.engine];
          if (slot.age >= life) {
            this.stop(fi, f, slot, si, hour, false);
          } else if (this.maintains(slot.strategy, slot.engine, slot.age)) {
            this.stop(fi, f, slot, si, hour, true);
          }
        }
        slot.strip[hour % STRIP_HOURS] = state;
      }
      f.profit[hour] = this.profitOf(f);
    }
    this.hour = hour;
    this.unlock();
    this.checkEnd();
    return !this.exhausted;
  };

  Game.prototype.stop = function (fi, f, slot, si, hour, maintained) {
    var run = slot.age;
    var life = this.pool.lives[slot.engine];
    if (this.recordEpisodes) {
      this.episodes[fi].push([si, slot.row, slot.engine, slot.start, run, maintained ? 1 : 0]);
    }
    if (maintained) {
      f.maintenances += 1;
      f.lastMaintenance = hour;
    } else {
      f.failures += 1;
      f.lastFailure = hour;
    }
    slot.down = maintained ? this.settings.maintenance_downtime : this.settings.failure_downtime;
    slot.downKind = maintained ? MAINTENANCE : REPAIR;
    if (f.you) {
      this.event("your turbofan " + (si + 1) + " (engine " + this.pool.units[slot.engine] + ") " +
        (maintained ? "was maintained after " + run + " hours, with " + (life - run) +
          " hours of life left." : "broke down after " + run + " hours."), hour);
    }
    if (slot.down === 0) { this.nextEngine(slot, si, hour); }
  };

  Game.prototype.nextEngine = function (slot, si, hour) {
    slot.row += 1;
    if (slot.row >= this.rows) { this.exhausted = true; slot.row = this.rows - 1; return; }
    slot.engine = this.sequence[slot.row * this.slots + si];
    slot.age = 0;
    slot.start = hour;
  };

  // The player's unlocks: preventive after some failures, then the data scientist, then
  // the federation's offer, each some hours after the one before.
  Game.prototype.unlock = function () {
    for (var next = this.nextUnlock(); next && !next.failures && !next.hours; next = this.nextUnlock()) {
      this.unlocked[next.key] = this.hour;
      this.event(this.labels[next.key] + " maintenance is unlocked.");
      if (this.autoUpgrade) { this.setStrategy(0, next.key); } else { this.pending.push(next.key); }
    }
  };

  // The next strategy to unlock, with the failures or the hours it still waits for;
  // null when every strategy is unlocked.
  Game.prototype.nextUnlock = function () {
    var s = this.settings, you = this.factories[0];
    var step = Object.keys(this.unlocked).length;
    var next = this.ladder[step];
    if (!next) { return null; }
    if (next === "preventive") {
      return { key: next, failures: Math.max(0, s.unlock_failures - you.failures) };
    }
    // The data scientist comes some hours after the unlock before; the federation's offer
    // some hours after that.
    var pause = next === "local" ? s.scientist_hours : s.federation_hours;
    var since = this.unlocked[this.ladder[step - 1]];
    return { key: next, hours: Math.max(0, since + pause - this.hour) };
  };

  Game.prototype.checkEnd = function () {
    if (this.finished) { return; }
    var best = 0;
    for (var i = 1; i < this.factories.length; i++) {
      if (this.factories[i].profit[this.hour] > this.factories[best].profit[this.hour]) { best = i; }
    }
    if (this.factories[best].profit[this.hour] >= this.settings.target) {
      this.finished = { hour: this.hour, winner: best };
      this.event(this.factories[best].name + " reached " + money(this.settings.target) + " first.");
    }
  };

  // Factories by profit now, with what the end-of-game table shows.
  Game.prototype.standings = function () {
    var self = this;
    return this.factories.map(function (f, i) {
      var main = null, most = -1, total = 0;
      for (var key in f.hoursOn) {
        total += f.hoursOn[key];
        if (f.hoursOn[key] > most) { most = f.hoursOn[key]; main = key; }
      }
      return {
        index: i, name: f.name, profit: f.profit[self.hour], strategy: f.strategy,
        main: main || f.strategy, share: total ? most / total : 1,
        maintenances: f.maintenances, failures: f.failures
      };
    }).sort(function (a, b) { return b.profit - a.profit || a.index - b.index; });
  };

  // --- the views ---------------------------------------------------------------------

  function sizeCanvas(canvas, width, height) {
    var ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(width * ratio));
    canvas.height = Math.max(1, Math.round(height * ratio));
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    var context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    return context;
  }

  // One turbofan: title, status strip, sensors, and what its strategy watches.
  function TurbofanView(parent, index, compact) {
    this.index = index;
    this.compact = compact;
    this.root = element("div", "turbofan" + (compact ? " compact" : ""));
    this.title = element("p", "turbofan-title");
    this.strip = element("canvas", "strip");
    this.sensors = element("canvas", "sensors");
    this.chart = element("canvas", "strategy-chart");
    this.strip.setAttribute("aria-hidden", "true");
    this.sensors.setAttribute("aria-hidden", "true");
    this.chart.setAttribute("aria-hidden", "true");
    this.root.appendChild(this.title);
    this.root.appendChild(this.strip);
    this.root.appendChild(this.sensors);
    this.root.appendChild(this.chart);
    parent.appendChild(this.root);
    this.drawn = null;
  }

  TurbofanView.prototype.layout = function (names) {
    var style = getComputedStyle(this.root);
    var inner = this.root.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    var width = Math.max(24, Math.floor(inner));
    this.width = width;
    this.stripContext = sizeCanvas(this.strip, width, this.compact ? 5 : 8);
    var sensorHeight = this.compact ? 56 : 96;
    this.sensorContext = sizeCanvas(this.sensors, width, sensorHeight);
    this.sensors.hidden = !names.length;
    this.chartContext = sizeCanvas(this.chart, width, this.compact ? 30 : 56);
    // The sensor grid's frame and labels are drawn once, and copied in every frame.
    this.background = document.createElement("canvas");
    var bg = sizeCanvas(this.background, width, sensorHeight);
    bg.fillStyle = "#f7f9fb";
    bg.fillRect(0, 0, width, sensorHeight);
    bg.fillStyle = "#6b7785";
    bg.font = (this.compact ? 7 : 9) + "px sans-serif";
    var cw = width / 4, ch = sensorHeight / 4;
    for (var j = 0; j < 16; j++) {
      var x = (j % 4) * cw, y = Math.floor(j / 4) * ch;
      bg.strokeStyle = "#e3e8ee";
      bg.strokeRect(x + 0.5, y + 0.5, cw - 1, ch - 1);
      if (!this.compact && names[j]) { bg.fillText(names[j], x + 2, y + 9); }
    }
    this.drawn = null;
  };

  TurbofanView.prototype.draw = function (game, factory, slot) {
    var key = game.hour + ":" + this.width;
    if (this.drawn === key) { return; }
    this.drawn = key;
    var pool = game.pool;
    var life = pool.lives[slot.engine];
    var state = slot.down > 0 ? slot.downKind : RUNNING;
    var words = state === RUNNING ? "running" : state === MAINTENANCE ? "maintenance" : "repair";
    var text = "Turbofan " + (this.index + 1) + " · engine " + pool.units[slot.engine] + " · " +
      (state === RUNNING ? slot.age + " h" : words + ", " + slot.down + " h left");
    if (this.title.textContent !== text) { this.title.textContent = text; }
    this.root.dataset.state = words;
    this.drawStrip(game, slot);
    this.drawSensors(pool, slot);
    this.drawStrategy(game, slot, life, state);
  };

  TurbofanView.prototype.drawStrip = function (game, slot) {
    var c = this.stripContext, w = this.width, h = this.compact ? 5 : 8;
    var hours = Math.min(game.hour, STRIP_HOURS, w);
    var step = w / Math.min(STRIP_HOURS, w);
    c.clearRect(0, 0, w, h);
    var run = -1, from = 0;
    // Runs of one state as one rectangle each: a few per frame.
    for (var i = 0; i <= hours; i++) {
      var hour = game.hour - hours + i;
      var value = i < hours ? slot.strip[(hour + 1) % STRIP_HOURS] : -2;
      if (value !== run) {
        if (run >= 0) {
          c.fillStyle = STATE_COLOURS[run];
          c.fillRect(w - (hours - from) * step, 0, (i - from) * step, h);
        }
        run = value;
        from = i;
      }
    }
    c.fillStyle = "#1d2733";
    for (var k = slot.changes.length - 1; k >= 0; k--) {
      var ago = game.hour - slot.changes[k];
      if (ago > hours) { break; }
      c.beginPath();
      c.arc(w - ago * step, h / 2, h / 2.5, 0, 2 * Math.PI);
      c.fill();
    }
  };

  TurbofanView.prototype.drawSensors = function (pool, slot) {
    if (!pool.sensors) { return; }  // a pack built before the game: no sparklines
    var c = this.sensorContext;
    var w = this.width, h = this.compact ? 56 : 96;
    c.drawImage(this.background, 0, 0, w, h);
    var age = Math.min(slot.age, pool.lives[slot.engine]);
    if (age < 2) { return; }
    var first = Math.max(1, age - SPARK_HOURS + 1);
    var base = pool.offsets[slot.engine];
    var cw = w / 4, ch = h / 4, pad = this.compact ? 2 : 3, top = this.compact ? 2 : 10;
    c.strokeStyle = slot.down > 0 ? "#8894a1" : "#1f5fa8";
    c.lineWidth = 1;
    c.beginPath();
    for (var j = 0; j < 16; j++) {
      var low = 255, high = 0, t, v;
      for (t = first; t <= age; t++) {
        v = pool.sensors[(base + t - 1) * 16 + j];
        if (v < low) { low = v; }
        if (v > high) { high = v; }
      }
      var span = high - low || 1;
      var x0 = (j % 4) * cw + pad, y0 = Math.floor(j / 4) * ch + top;
      var plotW = cw - 2 * pad, plotH = ch - top - pad;
      var dx = plotW / (SPARK_HOURS - 1);
      for (t = first; t <= age; t++) {
        v = pool.sensors[(base + t - 1) * 16 + j];
        var x = x0 + (t - first) * dx, y = y0 + plotH * (1 - (v - low) / span);
        if (t === first) { c.moveTo(x, y); } else { c.lineTo(x, y); }
      }
    }
    c.stroke();
  };

  TurbofanView.prototype.drawStrategy = function (game, slot, life, state) {
    var c = this.chartContext, w = this.width, h = this.compact ? 30 : 56;
    var s = game.settings;
    var strategy = slot.strategy;
    var predictive = strategy !== "corrective" && strategy !== "preventive";
    var age = slot.age;
    c.clearRect(0, 0, w, h);
    c.fillStyle = "#fbfcfd";
    c.fillRect(0, 0, w, h);
    var xMax = Math.max(400, age);
    var yMax = predictive ? game.pool.rulCap : xMax;
    var line = predictive ? s.rul_threshold : s.preventive_age;
    var sx = w / xMax, sy = (h - 2) / yMax;
    if (strategy !== "corrective") {  // the line the strategy maintains at, dashed
      c.strokeStyle = "#b23a48";
      c.setLineDash([3, 3]);
      c.beginPath();
      c.moveTo(0, h - 1 - line * sy);
      c.lineTo(w, h - 1 - line * sy);
      c.stroke();
      c.setLineDash([]);
    }
    if (age < 1) { return; }
    c.strokeStyle = FACTORY_COLOURS[0];
    c.lineWidth = 1.5;
    c.beginPath();
    var step = Math.max(1, Math.floor(age / w));
    var y = 0;
    for (var t = 1; t <= age; t += step) {
      var value = predictive ? game.pool.prediction(strategy, slot.engine, t) : t;
      y = h - 1 - Math.min(yMax, Math.max(0, value)) * sy;
      if (t === 1) { c.moveTo(t * sx, y); } else { c.lineTo(t * sx, y); }
    }
    c.stroke();
    c.lineWidth = 1;
    if (state !== RUNNING) {  // where this run ended: yellow maintained, red broke down
      c.fillStyle = STATE_COLOURS[state];
      c.strokeStyle = "#1d2733";
      c.beginPath();
      c.arc(Math.min(w - 4, age * sx), Math.max(4, Math.min(h - 4, y)), 4, 0, 2 * Math.PI);
      c.fill();
      c.stroke();
    }
  };

  // A factory: its money, counters and turbofans.
  function FactoryView(root, index, compact) {
    this.index = index;
    this.root = root;
    this.cash = root.querySelector(".cash");
    this.maint = root.querySelector(".maint-count");
    this.fail = root.querySelector(".fail-count");
    this.strategy = root.querySelector(".rival-strategy");
    this.holder = root.querySelector(".turbofans");
    this.turbofans = [];
    this.compact = compact;
  }

  FactoryView.prototype.build = function (game) {
    this.holder.textContent = "";
    this.turbofans = [];
    for (var s = 0; s < game.slots; s++) {
      this.turbofans.push(new TurbofanView(this.holder, s, this.compact));
    }
  };

  FactoryView.prototype.layout = function (game) {
    this.turbofans.forEach(function (view) { view.layout(game.pool.sensorNames); });
  };

  FactoryView.prototype.draw = function (game) {
    var f = game.factories[this.index];
    setText(this.cash, money(f.profit[game.hour]));
    setText(this.maint, whole(f.maintenances));
    setText(this.fail, whole(f.failures));
    // Counters flash for a few hours after a maintenance or a failure.
    toggle(this.maint, "flash", game.hour - f.lastMaintenance < FLASH_HOURS);
    toggle(this.fail, "flash", game.hour - f.lastFailure < FLASH_HOURS);
    if (this.strategy) { setText(this.strategy, game.labels[f.strategy]); }
    for (var s = 0; s < this.turbofans.length; s++) {
      this.turbofans[s].draw(game, f, f.slots[s]);
    }
  };

  // A dialog closed with Esc keeps the answer of its last click: clear it first.
  function openDialog(id) {
    var dialog = document.getElementById(id);
    dialog.returnValue = "";
    dialog.showModal();
  }

  function setText(node, text) {
    if (node.textContent !== text) { node.textContent = text; }
  }

  function toggle(node, name, on) {
    if (node.classList.contains(name) !== on) { node.classList.toggle(name, on); }
  }

  function LeaderChart(canvas) {
    this.canvas = canvas;
    this.drawn = null;
  }

  LeaderChart.prototype.layout = function () {
    this.width = Math.max(200, Math.floor(this.canvas.parentNode.clientWidth));
    this.height = Math.round(Math.min(260, Math.max(160, this.width * 0.5)));
    this.context = sizeCanvas(this.canvas, this.width, this.height);
    this.drawn = null;
  };

  LeaderChart.prototype.draw = function (game, solo) {
    var key = game.hour + ":" + solo + ":" + this.width;
    if (this.drawn === key) { return; }
    this.drawn = key;
    var c = this.context, w = this.width, h = this.height;
    var left = 46, bottom = 18, plotW = w - left - 6, plotH = h - bottom - 6;
    var target = game.settings.target;
    var hours = Math.max(game.hour, 1000);
    var low = 0, high = target * 1.08;
    var shown = solo ? [0] : [0, 1, 2, 3].slice(0, game.factories.length);
    shown.forEach(function (i) {
      var p = game.factories[i].profit;
      for (var t = 0; t <= game.hour; t += Math.max(1, Math.floor(game.hour / 200))) {
        if (p[t] < low) { low = p[t]; }
        if (p[t] > high) { high = p[t]; }
      }
      if (p[game.hour] < low) { low = p[game.hour]; }
      if (p[game.hour] > high) { high = p[game.hour]; }
    });
    var sx = plotW / hours, sy = plotH / (high - low);
    c.clearRect(0, 0, w, h);
    c.fillStyle = "#6b7785";
    c.font = "10px sans-serif";
    c.fillText(money(high).replace(",000,000", "M").replace(",000", "k"), 2, 10);
    c.fillText(money(low).replace(",000,000", "M").replace(",000", "k"), 2, 6 + plotH);
    c.fillText("hour " + whole(hours), w - 70, h - 4);
    c.strokeStyle = "#dde3ea";
    c.strokeRect(left + 0.5, 6.5, plotW, plotH);
    var ty = 6 + plotH - (target - low) * sy;  // the finish line
    c.strokeStyle = "#1d2733";
    c.setLineDash([5, 4]);
    c.beginPath();
    c.moveTo(left, ty);
    c.lineTo(left + plotW, ty);
    c.stroke();
    c.setLineDash([]);
    c.fillStyle = "#1d2733";
    c.fillText(money(target), left + 4, ty - 3);
    var step = Math.max(1, Math.floor(game.hour / plotW));
    shown.slice().reverse().forEach(function (i) {
      var p = game.factories[i].profit;
      c.strokeStyle = FACTORY_COLOURS[i];
      c.lineWidth = i === 0 ? 2.5 : 1.5;
      c.beginPath();
      c.moveTo(left, 6 + plotH - (p[0] - low) * sy);
      for (var t = step; t < game.hour; t += step) {
        c.lineTo(left + t * sx, 6 + plotH - (p[t] - low) * sy);
      }
      c.lineTo(left + game.hour * sx, 6 + plotH - (p[game.hour] - low) * sy);
      c.stroke();
    });
    c.lineWidth = 1;
  };

  // --- the page ------------------------------------------------------------------------

  function Page() {
    this.form = document.getElementById("game-form");
    this.error = document.getElementById("game-error");
    this.playButton = document.getElementById("play");
    this.speed = document.getElementById("speed");
    this.hourOutput = document.getElementById("hour");
    this.latest = document.getElementById("latest-event");
    this.solo = document.getElementById("solo");
    this.auto = document.getElementById("auto-upgrade");
    this.shortcuts = document.getElementById("shortcuts");
    this.chart = new LeaderChart(document.getElementById("leader-chart"));
    this.standingsBody = document.querySelector("#standings tbody");
    this.playing = false;
    this.game = null;
    this.carry = 0;
    this.last = null;
    // Frame statistics, read by the browser tests: the work of each frame in ms, and the
    // hours each frame advanced.
    this.frameTimes = [];
    this.frameHours = [];
    this.recording = false;
    var self = this;
    SPEEDS.forEach(function (hours, i) {
      var option = element("option", "", (i + 1) + ": " + hours + " hours per second");
      option.value = String(i);
      self.speed.appendChild(option);
    });
    this.speed.value = String(DEFAULT_SPEED);
    this.bind();
    this.frame = this.frame.bind(this);
    this.start(true);
  }

  Page.prototype.bind = function () {
    var self = this;
    this.playButton.addEventListener("click", function () { self.toggle(); });
    document.getElementById("reset").addEventListener("click", function () { self.start(false); });
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.start(false);
    });
    document.getElementById("setup-defaults").addEventListener("click", function () {
      Array.prototype.forEach.call(self.form.querySelectorAll("[data-default]"), function (input) {
        input.value = input.dataset.default;
      });
      self.start(false);
    });
    this.solo.addEventListener("change", function () { self.render(true); });
    this.auto.addEventListener("change", function () {
      if (self.game) { self.game.autoUpgrade = self.auto.checked; }
    });
    document.addEventListener("keydown", function (event) { self.key(event); });
    // Canvases follow the page's width (a window resized, a phone turned, a scrollbar).
    var width = 0;
    new ResizeObserver(function (entries) {
      var now = Math.round(entries[0].contentRect.width);
      if (now !== width) {
        width = now;
        self.layout();
      }
    }).observe(document.getElementById("game"));
    // Moved to a screen of another pixel density: draw the canvases sharp again.
    (function watchRatio() {
      var query = window.matchMedia("(resolution: " + (window.devicePixelRatio || 1) + "dppx)");
      query.addEventListener("change", function () {
        self.layout();
        watchRatio();
      }, { once: true });
    })();
    var intro = document.getElementById("intro-dialog");
    intro.addEventListener("close", function () {
      if (intro.returnValue === "start") { self.setPlaying(true); }
    });
    var unlock = document.getElementById("unlock-dialog");
    unlock.addEventListener("close", function () { self.unlockClosed(unlock.returnValue); });
    var end = document.getElementById("end-dialog");
    end.addEventListener("close", function () { self.endClosed(end.returnValue); });
  };

  // Space plays or pauses, 1-8 set the speed: unless the player turned the shortcuts
  // off, a dialog is open (Esc closes it: the browser's own), a modifier is held, or the
  // key belongs to the focused control (Space on a button or a checkbox, digits in a field).
  Page.prototype.key = function (event) {
    if (!this.shortcuts.checked || document.querySelector("dialog[open]")) { return; }
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var target = event.target || document.body;
    var control = /^(INPUT|SELECT|TEXTAREA|BUTTON|SUMMARY|A)$/.test(target.tagName);
    var entry = /^(SELECT|TEXTAREA)$/.test(target.tagName) ||
      (target.tagName === "INPUT" && !/^(checkbox|radio|button|submit|reset)$/.test(target.type));
    if (event.key === " " && !control) {
      event.preventDefault();
      if (!event.repeat) { this.toggle(); }
    } else if (/^[1-8]$/.test(event.key) && !entry) {
      this.speed.value = String(Number(event.key) - 1);
    }
  };

  Page.prototype.query = function () {
    var params = new URLSearchParams();
    new FormData(this.form).forEach(function (value, name) { params.append(name, value); });
    return params.toString();
  };

  Page.prototype.start = function (first) {
    var self = this;
    this.setPlaying(false);
    this.loading = true;  // the old game stands still, and offers nothing, until the new one
    var busy = document.getElementById("game");
    busy.setAttribute("aria-busy", "true");
    fetch(this.form.action + "?" + this.query())
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (answer) {
        self.showError(answer.ok ? null : answer.body);
        if (!answer.ok) { return; }
        self.load(answer.body);
        if (first) {
          self.intro();
        }
      })
      .catch(function (error) { self.showError({ error: "The game could not start: " + error }); })
      .then(function () {
        self.loading = false;
        busy.setAttribute("aria-busy", "false");
      });
  };

  Page.prototype.showError = function (body) {
    Array.prototype.forEach.call(this.form.querySelectorAll("[aria-invalid]"), function (input) {
      input.removeAttribute("aria-invalid");
    });
    this.error.hidden = !body;
    this.error.textContent = body ? body.error : "";
    if (!body) { return; }
    document.getElementById("setup").open = true;
    var input = body.parameter && document.getElementById("id_" + body.parameter);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  };

  Page.prototype.load = function (answer) {
    var game = new Game(answer);
    game.autoUpgrade = this.auto.checked;
    game.recordEpisodes = this.recording;
    while (game.autoUpgrade && game.pending.length) { game.setStrategy(0, game.pending.shift()); }
    this.game = game;
    this.endShown = false;
    this.setPlaying(false);
    window.tycoonGame = this;  // for the browser tests (and the curious)
    this.you = new FactoryView(document.getElementById("your-factory"), 0, false);
    this.you.build(game);
    var rivals = document.getElementById("rivals");
    rivals.textContent = "";
    this.rivals = answer.rivals.map(function (rival, i) {
      var root = element("section", "factory rival");
      root.style.borderTopColor = FACTORY_COLOURS[i + 1];
      root.setAttribute("aria-label", rival.name);
      var head = element("div", "factory-head");
      head.appendChild(element("h3", "", rival.name));
      head.appendChild(element("p", "rival-strategy"));
      head.appendChild(element("p", "cash"));
      var counters = element("p", "counters");
      counters.appendChild(element("span", "maint-count", "0"));
      counters.appendChild(document.createTextNode(" maint. · "));
      counters.appendChild(element("span", "fail-count", "0"));
      counters.appendChild(document.createTextNode(" failures"));
      head.appendChild(counters);
      root.appendChild(head);
      root.appendChild(element("div", "turbofans"));
      rivals.appendChild(root);
      var view = new FactoryView(root, i + 1, true);
      view.build(game);
      return view;
    });
    document.getElementById("your-factory").style.borderTopColor = FACTORY_COLOURS[0];
    this.buildChooser();
    this.buildStandings();
    this.layout();
    this.latest.textContent = "";
    this.render(true);
    if (!this.running) {
      this.running = true;
      requestAnimationFrame(this.frame);
    }
  };

  Page.prototype.buildChooser = function () {
    var self = this, game = this.game;
    var holder = document.getElementById("strategy-options");
    holder.textContent = "";
    this.choices = {};
    game.ladder.forEach(function (key) {
      var label = element("label", "choice");
      var input = element("input");
      input.type = "radio";
      input.name = "your-strategy";
      input.value = key;
      input.checked = key === game.factories[0].strategy;
      input.addEventListener("change", function () {
        if (input.checked) {
          game.setStrategy(0, key);
          self.render(true);
        }
      });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + game.labels[key]));
      var lock = element("span", "lock");
      label.appendChild(lock);
      holder.appendChild(label);
      self.choices[key] = { input: input, lock: lock };
    });
  };

  Page.prototype.buildStandings = function () {
    var game = this.game;
    this.standingsBody.textContent = "";
    this.standingRows = game.factories.map(function (f, i) {
      var tr = element("tr");
      tr.dataset.factory = String(i);
      var cells = [element("td"), element("th"), element("td", "number"), element("td"),
        element("td", "number"), element("td", "number")];
      cells[1].scope = "row";
      var swatch = element("span", "swatch");
      swatch.style.background = FACTORY_COLOURS[i];
      cells[1].appendChild(swatch);
      cells[1].appendChild(document.createTextNode(f.name));
      cells.forEach(function (td) { tr.appendChild(td); });
      return tr;
    });
  };

  Page.prototype.layout = function () {
    if (!this.game) { return; }
    var game = this.game;
    this.you.layout(game);
    this.rivals.forEach(function (view) { view.layout(game); });
    this.chart.layout();
    this.render(true);
  };

  Page.prototype.intro = function () {
    var s = this.game.settings;
    var body = document.getElementById("intro-body");
    body.textContent = "";
    [
      "You run a factory of " + s.fleet_size + " turbofans. Every hour a turbofan runs earns " +
        money(s.revenue_per_cycle) + ".",
      "Turbofans don't run forever. A broken one costs " + money(s.failure_cost) + " to repair and " +
        "is down " + s.failure_downtime + " hours; maintained before it breaks, it costs " +
        money(s.maintenance_cost) + " and " + s.maintenance_downtime + " hours.",
      "Better strategies unlock as you go, up to " +
        this.game.labels[this.game.ladder[this.game.ladder.length - 1]].toLowerCase() +
        " maintenance. Three rivals race you " +
        "to " + money(s.target) + ", each with one strategy, on the same engines.",
      "Space plays or pauses; 1 to 8 set the speed; Esc closes a dialog."
    ].forEach(function (text) { body.appendChild(element("p", "", text)); });
    openDialog("intro-dialog");
  };

  Page.prototype.setPlaying = function (playing) {
    this.playing = playing;
    this.playButton.textContent = playing ? "Pause" : "Play";
    this.playButton.setAttribute("aria-pressed", String(playing));
    this.last = null;
    this.carry = 0;
  };

  Page.prototype.toggle = function () {
    if (!this.game || this.loading) { return; }
    if (!this.playing && this.game.finished && !this.game.keepPlaying) {
      this.showEnd();
      return;
    }
    if (!this.playing && this.game.exhausted) {
      this.ended();
      return;
    }
    this.setPlaying(!this.playing);
  };

  Page.prototype.ended = function () {
    var game = this.game;
    var text = "The game ends at hour " + whole(game.hour) +
      ": that is as far as its engine sequence goes. Start a new game to play on.";
    if (game.events[game.events.length - 1] !== text) { game.events.push(text); }
    this.render(false);
  };

  Page.prototype.frame = function (now) {
    requestAnimationFrame(this.frame);
    if (!this.game) { return; }
    var started = performance.now();
    var advanced = 0;
    if (this.playing && !this.loading && !document.querySelector("dialog[open]")) {
      if (this.last !== null) { this.carry += (now - this.last) / 1000 * SPEEDS[Number(this.speed.value)]; }
      this.last = now;
      var hours = Math.min(MAX_HOURS_PER_FRAME, Math.floor(this.carry));
      this.carry -= hours;
      if (this.carry > MAX_HOURS_PER_FRAME) { this.carry = 0; }  // a stalled tab does not race
      var game = this.game;
      for (var i = 0; i < hours; i++) {
        // An unlock to offer or the race's end: not an hour more before the player sees it.
        if (game.pending.length || (game.finished && !game.keepPlaying)) { break; }
        if (!game.tick()) { break; }
        advanced += 1;
      }
    } else {
      this.last = null;
    }
    if (advanced) { this.render(false); }
    if (this.recording && this.playing) {
      this.frameTimes.push(performance.now() - started);
      this.frameHours.push(advanced);
    }
    this.afterHours();
  };

  // What follows an hour: an unlock's dialog, the end of the race, the end of the sequence.
  Page.prototype.afterHours = function () {
    var game = this.game;
    if (this.loading || document.querySelector("dialog[open]")) { return; }
    if (game.pending.length) {
      this.offer(game.pending.shift());
    } else if (game.finished && !game.keepPlaying && !this.endShown) {
      this.setPlaying(false);
      this.showEnd();
    } else if (game.exhausted && this.playing) {
      this.setPlaying(false);
      this.ended();
    }
  };

  var ADVICE = {
    preventive: function (s) {
      return "A preventive strategy uses when engines failed in the past to pick a fixed age: " +
        "every turbofan is maintained after " + s.preventive_age + " hours, whatever its " +
        "sensors say. One that fails younger still breaks down.";
    },
    local: function (s) {
      return "Your new data scientist trained a model on a single site's worth of run-to-failure " +
        "engines. It reads the sensors and predicts each turbofan's remaining hours; it is " +
        "maintained when the prediction drops below " + s.rul_threshold + " hours (the dashed line).";
    },
    federated: function (s) {
      return "A federation offers its model: trained by secure aggregation on many sites' " +
        "engines, which never left their sites. More engines make better predictions: " +
        "maintained when its prediction drops below " + s.rul_threshold + " hours.";
    }
  };

  Page.prototype.offer = function (key) {
    var game = this.game, s = game.settings;
    this.wasPlaying = this.playing;
    this.setPlaying(false);
    this.offered = key;
    var titles = {
      preventive: "Preventive maintenance unlocked",
      local: "A data scientist arrives: local predictive maintenance",
      federated: "An offer from the federation: federated predictive maintenance"
    };
    document.getElementById("unlock-title").textContent = titles[key] || game.labels[key] + " unlocked";
    var body = document.getElementById("unlock-body");
    body.textContent = "";
    body.appendChild(element("p", "", ADVICE[key] ? ADVICE[key](s) : ""));
    var long = game.answer.strategies.filter(function (r) { return r.key === key; })[0];
    if (long) { body.appendChild(element("p", "note", "In this game: " + long.long + ".")); }
    document.getElementById("unlock-switch").textContent = "Switch to " + game.labels[key].toLowerCase();
    document.getElementById("unlock-auto").checked = game.autoUpgrade;
    openDialog("unlock-dialog");
  };

  Page.prototype.unlockClosed = function (value) {
    var game = this.game;
    if (!game) { return; }
    var auto = document.getElementById("unlock-auto").checked;
    game.autoUpgrade = auto;
    this.auto.checked = auto;
    if (value === "switch") { game.setStrategy(0, this.offered); }
    this.render(true);
    // Later unlocks that came while the dialog was open, taken as the player now says.
    while (auto && game.pending.length) { game.setStrategy(0, game.pending.shift()); }
    if (this.wasPlaying) { this.setPlaying(true); }
  };

  Page.prototype.showEnd = function () {
    var game = this.game;
    var won = game.finished.winner === 0;
    document.getElementById("end-title").textContent = won ? "You won!" :
      game.factories[game.finished.winner].name + " won";
    document.getElementById("end-summary").textContent =
      game.factories[game.finished.winner].name + " reached " + money(game.settings.target) +
      " after " + whole(game.finished.hour) + " hours. Standings at hour " + whole(game.hour) + ":";
    var body = document.querySelector("#end-standings tbody");
    body.textContent = "";
    game.standings().forEach(function (row, rank) {
      var tr = element("tr");
      tr.dataset.factory = String(row.index);
      tr.appendChild(element("td", "", String(rank + 1)));
      var th = element("th", "", row.name);
      th.scope = "row";
      tr.appendChild(th);
      tr.appendChild(element("td", "number", money(row.profit)));
      tr.appendChild(element("td", "", game.labels[row.main] + " (" + Math.round(100 * row.share) + "%)"));
      tr.appendChild(element("td", "number", whole(row.maintenances)));
      tr.appendChild(element("td", "number", whole(row.failures)));
      body.appendChild(tr);
    });
    // The analyst replays at least 10 hours.
    document.getElementById("end-analyst").href = game.answer.analyst + "&horizon=" +
      Math.max(10, game.hour);
    this.endShown = true;  // once per race: play on, skip or a new game follow
    openDialog("end-dialog");
  };

  Page.prototype.endClosed = function (value) {
    var game = this.game;
    if (!game) { return; }
    game.keepPlaying = true;  // whatever comes next, this race's end is over
    if (value === "new") { this.start(false); return; }
    if (value === "skip") {
      // Unlocks on the way are offered, one dialog each, once the skip is done.
      for (var i = 0; i < SKIP_HOURS && game.tick(); i++) { /* hour after hour */ }
      game.event("skipped " + whole(SKIP_HOURS) + " hours.");
      this.render(true);
      return;
    }
    if (value === "on") { this.setPlaying(true); }
  };

  Page.prototype.render = function (force) {
    var game = this.game;
    if (!game) { return; }
    if (force) {  // something besides the hour changed: draw everything again
      this.chart.drawn = null;
      [this.you].concat(this.rivals).forEach(function (view) {
        view.turbofans.forEach(function (turbofan) { turbofan.drawn = null; });
      });
    }
    setText(this.hourOutput, whole(game.hour));
    this.you.draw(game);
    this.rivals.forEach(function (view) { view.draw(game); });
    this.chart.draw(game, this.solo.checked);
    this.drawStandings();
    this.drawChooser();
    var latest = game.events.length ? game.events[game.events.length - 1] : "";
    setText(this.latest, latest);
  };

  Page.prototype.drawStandings = function () {
    var game = this.game, body = this.standingsBody, rows = this.standingRows;
    var order = game.standings();
    var solo = this.solo.checked;
    order.forEach(function (row, rank) {
      var tr = rows[row.index];
      var cells = tr.children;
      setText(cells[0], String(rank + 1));
      setText(cells[2], money(row.profit));
      setText(cells[3], game.labels[row.strategy]);
      setText(cells[4], whole(row.maintenances));
      setText(cells[5], whole(row.failures));
      tr.hidden = solo && row.index !== 0;
      if (body.children[rank] !== tr) { body.insertBefore(tr, body.children[rank] || null); }
    });
  };

  Page.prototype.drawChooser = function () {
    var game = this.game;
    var next = game.nextUnlock();
    for (var key in this.choices) {
      var open = game.unlocked[key] !== undefined;
      var choice = this.choices[key];
      if (choice.input.disabled === open) { choice.input.disabled = !open; }
      if (choice.input.checked !== (game.factories[0].strategy === key)) {
        choice.input.checked = game.factories[0].strategy === key;
      }
      setText(choice.lock, open ? "" : " (locked)");
    }
    var text = "";
    if (next && next.failures !== undefined) {
      text = game.labels[next.key] + " unlocks after " + next.failures + " more failure" +
        (next.failures === 1 ? "" : "s") + ".";
    } else if (next) {
      text = game.labels[next.key] + " unlocks in " + whole(next.hours) + " hours.";
    } else {
      text = "Every strategy is unlocked.";
    }
    setText(document.getElementById("next-unlock"), text);
  };

  document.addEventListener("DOMContentLoaded", function () {
    if (document.getElementById("game")) { new Page(); }
  });
})();
