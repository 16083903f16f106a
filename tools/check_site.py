"""Open every page of the rendered book in headless Chromium and check it as a reader would see it.

    python tools/check_site.py [_docs] [--screenshots DIR]

A page fails if it is missing (every notebook in nbs/ must have one), if a chapter page has no content (a heading,
prose and at least one code cell), if an image on it does not load, if TeX is left unrendered in its prose, or if an internal link or anchor is broken.
Prints one line per check and, last, `site: N passed, N failed`; exits 1 if any check failed.
"""
import argparse, functools, http.server, sys, threading, urllib.error, urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

from playwright.sync_api import sync_playwright

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']

PAGE_FACTS = r"""() => ({
  h1: (document.querySelector('main h1, h1.title, h1') || {}).textContent || '',
  text: (document.querySelector('main') || document.body).innerText.length,
  code: document.querySelectorAll('main div.sourceCode, main pre code').length,
  broken_imgs: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  raw_tex: Array.from(document.querySelectorAll('main p, main li, main td')).filter(e => /\\\(|\\\[|\$\$/.test(e.innerText)).map(e => e.innerText.slice(0, 60)),
})"""


def serve(root: Path) -> str:
    "Serve `root` on a free localhost port in a background thread; return its base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{srv.server_address[1]}/'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('site', nargs='?', default='_docs', type=Path)
    ap.add_argument('--nbs', default='nbs', type=Path)
    ap.add_argument('--screenshots', type=Path, help='save a full-page PNG of every page here')
    a = ap.parse_args()
    base = serve(a.site)
    results = []

    def check(ok: bool, what: str):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)

    pages = ['index.html'] + [p.with_suffix('.html').name for p in sorted(a.nbs.glob('[0-9][0-9]_*.ipynb'))]
    facts, linked = {}, set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=FLAGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        for name in pages:
            if not (a.site/name).exists():
                check(False, f'{name}: page missing from the site'); continue
            page.goto(base + name, wait_until='load')
            f = facts[name] = page.evaluate(PAGE_FACTS)
            check(f['text'] > 300 and bool(f['h1'].strip()) and (name == 'index.html' or f['code'] > 0),
                  f"{name}: content ({f['text']} characters, {f['code']} code blocks, title {f['h1'].strip()[:40]!r})")
            check(not f['broken_imgs'], f"{name}: {len(page.query_selector_all('img'))} images load"
                  + (f" — broken: {f['broken_imgs'][:5]}" if f['broken_imgs'] else ''))
            check(not f['raw_tex'], f"{name}: maths rendered" + (f" — raw TeX left in: {f['raw_tex'][:3]}" if f['raw_tex'] else ''))
            if a.screenshots:
                a.screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.screenshots/f'{Path(name).stem}.png'), full_page=False)
        browser.close()

    for name, f in facts.items():  # internal links: the target page exists and the anchor is on it
        bad = []
        for href in f['links']:
            if not href.startswith(base): continue
            url, frag = urldefrag(href)
            path = urlparse(url).path.lstrip('/') or 'index.html'
            if path.endswith('/'): path += 'index.html'
            target = a.site/path
            if not target.exists(): bad.append(href); continue
            if frag and path.endswith('.html'):
                ids = facts[path]['ids'] if path in facts else None
                if ids is not None and unquote(frag) not in ids: bad.append(href)
        check(not bad, f"{name}: internal links ({sum(h.startswith(base) for h in f['links'])})"
              + (f" — broken: {bad[:5]} ({len(bad)} in all)" if bad else ''))
    n_ok = sum(results)
    print(f'site: {n_ok} passed, {len(results) - n_ok} failed')
    sys.exit(0 if all(results) else 1)


if __name__ == '__main__':
    main()
