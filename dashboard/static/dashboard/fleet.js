// The fleet-health page: draw its charts from the figures the server rendered beside them,
// and keep each running query current by polling its JSON every two seconds until it is
// done or failed; the JSON carries the query's part of the page, rendered by the server.
// Without JavaScript the page shows the tables, and a reload shows a finished query.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var HIDDEN_EVERY_MS = 15000;

  function draw(container) {
    if (!window.Plotly) return;
    container.querySelectorAll(".chart[data-figure]").forEach(function (chart) {
      var source = document.getElementById(chart.dataset.figure);
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      window.Plotly.react(chart, figure.data, figure.layout, {
        displayModeBar: false, responsive: true
      });
    });
  }

  function follow(article) {
    var url = article.dataset.statusUrl;
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (query) {
          if (!query) return true;
          if (query.running) return true;
          var holder = document.createElement("div");
          holder.innerHTML = query.html;
          var fresh = holder.firstElementChild;
          article.parentNode.replaceChild(fresh, article);
          article = fresh;
          draw(fresh);
          return false;
        })
        .catch(function () { return true; /* the coordinator is restarting: try again */ })
        .then(function (again) {
          if (again) window.setTimeout(poll, document.hidden ? HIDDEN_EVERY_MS : EVERY_MS);
        });
    }
    window.setTimeout(poll, EVERY_MS);
  }

  draw(document);
  document.querySelectorAll("article.query[data-status-url]").forEach(follow);
})();
