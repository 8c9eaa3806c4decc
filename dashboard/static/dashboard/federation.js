// The federation page: draw the metrics chart and keep the progress, the rounds and the
// model versions current by polling the page's JSON (the same words and cells the server
// rendered) every few seconds. Without JavaScript the server-rendered page stays as it is.
(function () {
  "use strict";
  var root = document.getElementById("federation-live");
  if (!root) return;
  var RUNNING_EVERY_MS = 2000;
  var IDLE_EVERY_MS = 15000;
  var chart = document.getElementById("metrics-chart");
  var downloadBase = (root.dataset.downloadUrl || "").replace(/0\/$/, "");

  function byId(id) { return document.getElementById(id); }

  function setText(id, text) {
    var element = byId(id);
    // Only real changes: the live region would otherwise repeat itself to screen readers.
    if (element && element.textContent !== text) element.textContent = text;
  }

  function show(id, visible) {
    var element = byId(id);
    if (element) element.hidden = !visible;
  }

  function drawChart(figure) {
    var drawn = figure.data.some(function (trace) { return trace.x.length; });
    show("chart-section", drawn);
    if (!chart || !window.Plotly || !drawn) return;
    window.Plotly.react(chart, figure.data, figure.layout, {
      displayModeBar: false, responsive: true
    });
  }

  function cell(tag, text, attributes) {
    var element = document.createElement(tag);
    element.textContent = text;
    Object.keys(attributes || {}).forEach(function (name) {
      element.setAttribute(name, attributes[name]);
    });
    return element;
  }

  function fillRows(tableId, rows, makeRow) {
    var body = byId(tableId).tBodies[0];
    var fresh = document.createElement("tbody");
    rows.forEach(function (row) { fresh.appendChild(makeRow(row)); });
    if (fresh.innerHTML !== body.innerHTML) body.parentNode.replaceChild(fresh, body);
  }

  function rowOf(row, lastIsCode) {
    var tr = document.createElement("tr");
    var last = row.cells.length - 1;
    row.cells.forEach(function (item, i) {
      var attributes = { "data-label": item.label };
      if (i === 0) {
        attributes.scope = "row";
        tr.appendChild(cell("th", item.text, attributes));
      } else if (i === last && lastIsCode) {
        var td = cell("td", "", attributes);
        td.appendChild(cell("code", item.text));
        tr.appendChild(td);
      } else {
        if (item.number) attributes["class"] = "number";
        tr.appendChild(cell("td", item.text, attributes));
      }
    });
    return tr;
  }

  function roundRow(row) {
    var tr = rowOf(row, false);
    if (row.live) tr.className = "live-row";
    return tr;
  }

  function versionRow(row) {
    var tr = rowOf(row, true);
    if (downloadBase) {
      var td = document.createElement("td");
      td.appendChild(cell("a", "download v" + row.version, { href: downloadBase + row.version + "/" }));
      tr.appendChild(td);
    }
    return tr;
  }

  function meter(prefix, numbers) {
    show(prefix + "-meter", Boolean(numbers));
    if (!numbers) return;
    var bar = byId(prefix + "-progress");
    // A bar needs a positive end (0 of 0 rounds); an epsilon target may be below 1.
    bar.max = numbers.max > 0 ? numbers.max : 1;
    bar.value = numbers.value;
    bar.textContent = numbers.text;
    setText(prefix + "-progress-text", numbers.text);
  }

  function render(page) {
    setText("federation-status", page.status_label);
    setText("federation-reason", page.reason);
    show("federation-reason-row", Boolean(page.reason));
    setText("live-headline", page.live.headline);
    setText("live-stage", page.live.stage);
    show("live-stage", Boolean(page.live.stage));
    setText("live-deadline", page.live.deadline);
    show("live-deadline", Boolean(page.live.deadline));
    setText("model-warning", page.model_warning);
    show("model-warning", Boolean(page.model_warning));
    meter("round", page.live.round);
    meter("overall", page.live.overall);
    fillRows("rounds-table", page.rounds, roundRow);
    show("rounds-wrap", page.rounds.length > 0);
    show("rounds-empty", page.rounds.length === 0);
    fillRows("versions-table", page.versions, versionRow);
    show("versions-wrap", page.versions.length > 0);
    show("versions-empty", page.versions.length === 0);
    drawChart(page.figure);
    renderBudget(page.budget);
  }

  // Epsilon spent for everyone; the ledger only reaches the admin's page.
  function renderBudget(budget) {
    if (!budget) return;
    meter("budget", budget);
    if (!budget.ledger || !byId("ledger-table")) return;
    fillRows("ledger-table", budget.ledger, function (row) { return rowOf(row, false); });
    show("ledger-wrap", budget.ledger.length > 0);
    show("ledger-empty", budget.ledger.length === 0);
  }

  var running = true;
  function poll() {
    fetch(root.dataset.progressUrl, { headers: { Accept: "application/json" }, cache: "no-cache" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (page) {
        if (!page) return;
        running = page.running;
        render(page);
        root.dataset.updated = new Date().toISOString();
      })
      .catch(function () { /* the coordinator is restarting: try again at the next tick */ })
      .then(function () {
        window.setTimeout(poll, running && !document.hidden ? RUNNING_EVERY_MS : IDLE_EVERY_MS);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) running = true;
  });
  setText("live-note", "This part of the page updates by itself every few seconds.");
  drawChart(JSON.parse(byId("metrics-figure").textContent));
  window.setTimeout(poll, RUNNING_EVERY_MS);
})();
