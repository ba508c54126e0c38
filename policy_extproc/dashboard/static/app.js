// The dashboard's only script of its own (no inline scripts: the CSP allows this origin's files
// only). It draws the charts from the JSON in data-charts and asks before destructive forms.
"use strict";

function confirmForms() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

function bar(id, labels, datasets, options) {
  var canvas = document.getElementById(id);
  if (!canvas || typeof Chart === "undefined") return;
  new Chart(canvas, {
    type: "bar",
    data: { labels: labels, datasets: datasets },
    options: Object.assign({ responsive: true, animation: false, maintainAspectRatio: false,
                             plugins: { legend: { display: datasets.length > 1 } } }, options || {}),
  });
}

function drawCharts() {
  var holder = document.getElementById("chart-data");
  if (!holder) return;
  var c = JSON.parse(holder.dataset.charts);
  bar("chart-teams", c.teams.labels, [
    { label: "today", data: c.teams.today, backgroundColor: "#4e79a7" },
    { label: "this month", data: c.teams.month, backgroundColor: "#a0cbe8" },
  ]);
  bar("chart-budgets", c.budgets.labels, [
    { label: "% of budget", data: c.budgets.used, backgroundColor: "#f28e2b" },
  ], { indexAxis: "y", scales: { x: { min: 0, suggestedMax: 100 } } });
  bar("chart-blocked", c.blocked.labels, [
    { label: "blocked", data: c.blocked.counts, backgroundColor: "#e15759" },
  ], { indexAxis: "y" });
}

document.addEventListener("DOMContentLoaded", function () {
  confirmForms();
  drawCharts();
});
