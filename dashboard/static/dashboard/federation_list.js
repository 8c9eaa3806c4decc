// The federation list keeps itself current: the table's rows are fetched again (the same
// page, rendered by the server) every few seconds while a federation runs, less often
// otherwise, and not while the tab is hidden.
(() => {
  const RUNNING_MS = 5000;
  const IDLE_MS = 15000;
  const table = document.getElementById("federation-table");
  if (!table) return;
  const running = (body) =>
    Array.from(body.querySelectorAll('td[data-label="Status"]')).some(
      (cell) => cell.textContent.trim() === "running",
    );
  async function refresh() {
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector("#federation-table tbody");
      const current = table.querySelector("tbody");
      if (fresh && current && fresh.innerHTML !== current.innerHTML) current.replaceWith(fresh);
    } catch (error) {
      // The next attempt will tell: a coordinator restarting is not the reader's problem.
    } finally {
      schedule();
    }
  }
  function schedule() {
    window.setTimeout(() => {
      if (document.hidden) schedule();
      else refresh();
    }, running(table) ? RUNNING_MS : IDLE_MS);
  }
  schedule();
})();
