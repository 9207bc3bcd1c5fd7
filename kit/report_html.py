"""HTML pieces of `kit report`: the page shell (inline CSS and JS, nothing fetched), tables, images, numbers."""
from __future__ import annotations

import html
import math

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:10px 20px}header a{color:#cfe3ff;margin-right:14px}
main{padding:12px 20px;max-width:1400px}h1{font-size:20px;margin:0}h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin-bottom:8px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef2f6;position:sticky;top:0}table.sortable th{cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pick-cv td{background:#e5f6e5}tr.pick-public td{background:#fff4d6}tr.pick-cv.pick-public td{background:#d9f0ff}
.badge{display:inline-block;font-size:11px;padding:0 5px;border-radius:8px;color:#fff;margin-left:4px}
.b-cv{background:#2e7d32}.b-public{background:#b26a00}img{max-width:100%;border:1px solid #ddd;background:#fff}
.note{color:#666}.box{background:#fff;border:1px solid #ddd;padding:8px 12px;margin:6px 0;display:inline-block}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid figure{margin:0;width:110px;font-size:11px;text-align:center}
.grid img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated}
.row{display:flex;flex-wrap:wrap;gap:10px}.row figure{margin:0}.row img{max-width:460px}
.controls{margin:6px 0}.controls input{width:280px}code{font-size:12px}.bad{color:#b00020}
"""

JS = """
(function(){
function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent.trim();
 if(v==='')return null;var n=Number(v);return isNaN(n)?v.toLowerCase():n;}
function sortBy(th){var table=th.closest('table'),body=table.tBodies[0],col=th.cellIndex;
 var asc=!th.classList.contains('asc');
 table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
 th.classList.add(asc?'asc':'desc');
 var rows=Array.prototype.slice.call(body.rows).map(function(r){return [key(r.cells[col]),r];});
 rows.sort(function(a,b){if(a[0]===null)return b[0]===null?0:1;if(b[0]===null)return -1;
  var c=(typeof a[0]===typeof b[0])?(a[0]<b[0]?-1:a[0]>b[0]?1:0):(typeof a[0]==='number'?-1:1);
  return asc?c:-c;});
 var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r[1]);});
 body.appendChild(frag);}
document.querySelectorAll('table.sortable th').forEach(function(th){
 th.addEventListener('click',function(){sortBy(th);});});
var box=document.getElementById('filter'),status=document.getElementById('status');
function filter(){var table=document.getElementById('ledger');if(!table)return;
 var q=(box?box.value:'').toLowerCase(),s=status?status.value:'',shown=0;
 Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
  var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!s||r.getAttribute('data-status')===s);
  r.style.display=ok?'':'none';if(ok)shown++;});
 var c=document.getElementById('count');if(c)c.textContent=shown+' of '+table.tBodies[0].rows.length+' submissions';}
if(box)box.addEventListener('input',filter);if(status)status.addEventListener('change',filter);filter();
})();
"""


def esc(value) -> str:
    """Text made safe for HTML (messages and names come from users)."""
    return html.escape("" if value is None else str(value))


def num(value, digits: int = 4) -> str:
    """A score for display: 4 decimals, blank when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def cell(value, digits: int = 4) -> str:
    """A <td>: numbers right-aligned with their exact value to sort by."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return f'<td class="num" data-v="{value!r}">{num(value, digits)}</td>'
    return f'<td data-v="">{esc(value)}</td>' if value in (None, "") else f"<td>{esc(value)}</td>"


def table(headers: list[str], rows: list[list], sortable: bool = True, id_: str = "") -> str:
    """A table of plain values (escaped; numbers formatted)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    attrs = (' class="sortable"' if sortable else "") + (f' id="{id_}"' if id_ else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(uri: str | None, alt: str) -> str:
    """An inline image, or a note that there is nothing to show."""
    if not uri:
        return f'<p class="note">{esc(alt)}: nothing to show yet.</p>'
    return f'<div><img src="{uri}" alt="{esc(alt)}"></div>'


def images_row(items: list[tuple[str, str]]) -> str:
    """Several images side by side, each with its caption."""
    return '<div class="row">' + "".join(f'<figure><img src="{u}" alt="{esc(t)}"><figcaption>{esc(t)}</figcaption>'
                                         "</figure>" for u, t in items) + "</div>"


def tiles(items: list[tuple[str, str]]) -> str:
    """A wrapping grid of small images with captions (misclassified or disagreeing images)."""
    return '<div class="grid">' + "".join(f'<figure><img src="{u}" alt="{esc(t)}"><figcaption>{esc(t)}</figcaption>'
                                          "</figure>" for u, t in items) + "</div>"


def page(title: str, body: str, nav: list[tuple[str, str]]) -> str:
    """A whole page: header with links, the body, the inline script."""
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for text, href in nav)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body><header><h1>{esc(title)}</h1><nav>{links}</nav></header><main>{body}</main>"
            f"<script>{JS}</script></body></html>")
