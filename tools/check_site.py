"""Open every page of the rendered book in headless Chromium and check it as a reader would see it, at 1280 px.

    python tools/check_site.py [_docs] [--screenshots DIR] [--width 1280]

A page fails if it is missing (every notebook in nbs/ must have one), if it has no content (a heading and prose; a
chapter also at least one code cell), if its title and sidebar entry lack the chapter number its file name gives, if its
previous/next links are not the neighbouring pages, if an image on it does not load (every <img>, lazy ones made
eager, must decode to a width > 0 once the page has loaded), if a page that draws with the book's own model (the
home page, chapters 4, 7, 8, 10 and 13, appendix A) shows no picture besides the Colab badge, if TeX is left unrendered in
its prose, if a display equation is cut off (wider than its box, and the box does not scroll), if a code line of at
most 120 characters needs horizontal scrolling, or if a link into the book is broken (file or anchor). Links into
the book are relative ones and absolute ones to the book's own address (settings.ini's doc_host + doc_baseurl,
https://sd-book.github.io/sd_book/...), which are mapped onto the local site; a redirect page is followed.
Prints one line per check and, last, `site: N passed, N failed`; exits 1 if any check failed.
"""
import argparse, configparser, functools, http.server, re, runpy, sys, threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from docs import chapter_label, chapter_number, SEP  # the numbering rule the site was made with  # noqa: E402

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']
CODE_FITS = 120  # a code line this long or shorter must show without scrolling (the column shows about 130)
# Pages that generate with the book's own model (sd_book.BOOK_MODEL), by the chapter number their file name starts
# with ('index' for the home page, 90 for appendix A): each must show at least one picture besides the Colab badge.
BOOK_MODEL_PAGES = ('index', 4, 7, 8, 10, 13, 90)

PAGE_FACTS = r"""() => ({
  h1: (document.querySelector('main h1, h1.title, h1') || {}).textContent || '',
  title: document.title,
  text: (document.querySelector('main') || document.body).innerText.length,
  code: document.querySelectorAll('main div.sourceCode, main pre code').length,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  raw_tex: Array.from(document.querySelectorAll('main p, main li, main td')).filter(e => /\\\(|\\\[|\$\$/.test(e.innerText)).map(e => e.innerText.slice(0, 60)),
  sidebar: Array.from(document.querySelectorAll('#quarto-sidebar a[href]')).map(a => [a.getAttribute('href'), a.innerText.trim()]),
  prev: (document.querySelector('nav.page-navigation .nav-page-previous a') || {}).href || null,
  next: (document.querySelector('nav.page-navigation .nav-page-next a') || {}).href || null,
})"""

# Images: every <img> of the page, once loaded and decoded. `load` waits for the images in the document, but not for
# lazy ones below the fold, so those are made eager first; decode() settles when the image is ready to draw (it
# rejects for a broken one). The Colab badge (an image inside the link to Colab, on every chapter) is told apart.
IMAGES = r"""async () => {
  const imgs = Array.from(document.images);
  for (const i of imgs) if (i.loading === 'lazy') i.loading = 'eager';
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.map(i => ({src: (i.getAttribute('src') || '').slice(0, 60), width: i.naturalWidth,
                         badge: !!i.closest('a[href*="colab.research.google.com"]')}));
}"""

# Display equations: one fails if its content is wider than its box and the box does not scroll (the reader cannot
# reach the cut-off part), if the box itself sticks out of the text column, or if the box clips it vertically.
MATHS = r"""() => {
  const main = (document.querySelector('main') || document.body).getBoundingClientRect();
  return Array.from(document.querySelectorAll('main .katex-display')).map(e => {
    const cs = getComputedStyle(e), r = e.getBoundingClientRect();
    return {scroll: /auto|scroll/.test(cs.overflowX), over: e.scrollWidth - e.clientWidth,
            clipped_y: /hidden|clip/.test(cs.overflowY) ? e.scrollHeight - e.clientHeight : 0,
            outside: Math.round(r.right - main.right),
            tex: ((e.querySelector('annotation') || {}).textContent || e.innerText).trim().slice(0, 50)};
  });
}"""

# Code cells: does each scroll sideways, its longest line, and how many characters its box shows.
CODE = r"""() => Array.from(document.querySelectorAll('main pre')).filter(p => p.offsetParent).map(p => {
  const cs = getComputedStyle(p), probe = document.createElement('span');
  probe.textContent = 'x'.repeat(100); probe.style.whiteSpace = 'pre';
  (p.querySelector('code') || p).appendChild(probe);
  const ch = probe.getBoundingClientRect().width / 100; probe.remove();
  const inner = p.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const lines = p.innerText.split('\n');
  return {source: p.classList.contains('cell-code'), scrolls: p.scrollWidth > p.clientWidth + 1,
          longest: Math.max(...lines.map(l => l.length)), fits: Math.floor(inner / ch),
          head: lines.find(l => l.length === Math.max(...lines.map(l => l.length))).trim().slice(0, 50)};
})"""


def serve(root: Path) -> str:
    "Serve `root` on a free localhost port in a background thread; return its base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{srv.server_address[1]}/'


def own_site() -> str:
    "The book's published address from settings.ini, e.g. https://sd-book.github.io/sd_book/."
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(Path(__file__).parents[1]/'settings.ini', encoding='utf-8')
    d = cfg['DEFAULT']
    return d['doc_host'].rstrip('/') + '/' + d['doc_baseurl'].strip('/') + '/'


def redirect_target(html: str) -> str | None:
    "Where a redirect page (meta refresh) sends the reader, or None."
    m = re.search(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', html, re.I)
    return m.group(1) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('site', nargs='?', default='_docs', type=Path)
    ap.add_argument('--nbs', default='nbs', type=Path)
    ap.add_argument('--screenshots', type=Path, help='save a PNG of the top of every page here')
    ap.add_argument('--full', action='store_true', help='with --screenshots: the whole page, not its first screen')
    ap.add_argument('--width', type=int, default=1280, help='viewport width in CSS pixels')
    a = ap.parse_args()
    base, site_url = serve(a.site), own_site()
    results = []

    def check(ok: bool, what: str):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)

    # Every notebook has a page; the sidebar's (reading order: index, then the top-level notebooks by file name) come
    # first, then any in sub-folders (e.g. nbs/modules/: module headers, not in the sidebar).
    reading = ['index.html'] + [p.with_suffix('.html').name for p in sorted(a.nbs.glob('[0-9][0-9]_*.ipynb'))]
    others = sorted(p.relative_to(a.nbs).with_suffix('.html').as_posix() for p in a.nbs.rglob('*.ipynb')
                    if not any(part.startswith(('.', '_')) for part in p.relative_to(a.nbs).parts))
    pages = reading + [p for p in others if p not in reading]
    facts, totals = {}, dict(eq=0, eq_scroll=0, code=0, code_scroll=0, out=0, out_scroll=0, fits=[])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=FLAGS)
        page = browser.new_page(viewport={'width': a.width, 'height': 900})

        def visit(name: str) -> dict:
            page.goto(base + name, wait_until='load')
            page.evaluate('document.fonts.ready.then(() => true)')  # measure with the real fonts (KaTeX's, the code font)
            return page.evaluate(PAGE_FACTS)

        for i, name in enumerate(pages):
            if not (a.site/name).exists():
                check(False, f'{name}: page missing from the site'); continue
            f = facts[name] = visit(name)
            check(f['text'] > 300 and bool(f['h1'].strip()) and (name == 'index.html' or name not in reading or f['code'] > 0),
                  f"{name}: content ({f['text']} characters, {f['code']} code blocks, title {f['h1'].strip()[:40]!r})")
            label = chapter_label(name)
            if label:  # the chapter number in the heading, the browser tab and the sidebar
                want = label + SEP
                entry = [t for h, t in f['sidebar'] if h.split('#')[0].split('/')[-1] == name]
                ok = f['h1'].strip().startswith(want) and f['title'].startswith(want) and bool(entry) and all(t.startswith(want) for t in entry)
                check(ok, f"{name}: numbered {want.strip()!r} in title, tab and sidebar"
                      + ('' if ok else f" — h1 {f['h1'].strip()[:30]!r}, tab {f['title'][:30]!r}, sidebar {entry}"))
            # previous/next: the neighbouring pages in reading order (index, then the notebooks by file name)
            want_prev = base + reading[i - 1] if 0 < i < len(reading) else None
            want_next = base + reading[i + 1] if i + 1 < len(reading) else None
            got_prev, got_next = (urldefrag(u)[0] if u else None for u in (f['prev'], f['next']))
            if i < len(reading): check((got_prev, got_next) == (want_prev, want_next),
                  f"{name}: previous/next links ({(got_prev or '-').replace(base, '')} / {(got_next or '-').replace(base, '')})"
                  + ('' if (got_prev, got_next) == (want_prev, want_next) else
                     f" — expected {(want_prev or '-').replace(base, '')} / {(want_next or '-').replace(base, '')}"))
            imgs = page.evaluate(IMAGES)
            broken = [i['src'] for i in imgs if i['width'] == 0]
            check(not broken, f"{name}: {len(imgs) - len(broken)} of {len(imgs)} images load (each decodes to a width > 0)"
                  + (f" — broken: {broken[:5]} ({len(broken)} in all)" if broken else ''))
            if (name == 'index.html' and 'index' in BOOK_MODEL_PAGES) or chapter_number(name) in BOOK_MODEL_PAGES:
                pictures = sum(1 for i in imgs if i['width'] > 0 and not i['badge'])
                check(pictures > 0, f"{name}: draws with the book's model and shows {pictures} picture{'s' * (pictures != 1)} besides the Colab badge")
            check(not f['raw_tex'], f"{name}: maths rendered" + (f" — raw TeX left in: {f['raw_tex'][:3]}" if f['raw_tex'] else ''))

            eqs = page.evaluate(MATHS)
            cut = [e for e in eqs if (e['over'] > 1 and not e['scroll']) or e['outside'] > 1 or e['clipped_y'] > 1]
            scrolling = [e for e in eqs if e['scroll'] and e['over'] > 1]
            totals['eq'] += len(eqs); totals['eq_scroll'] += len(scrolling)
            check(not cut, f"{name}: {len(eqs)} display equations fit at {a.width} px ({len(scrolling)} scroll in their own box)"
                  + (f" — cut off: {[(e['tex'], e['over'], e['outside'], e['clipped_y']) for e in cut[:4]]} ({len(cut)} in all)" if cut else ''))

            blocks = page.evaluate(CODE)
            src = [b for b in blocks if b['source']]
            out = [b for b in blocks if not b['source']]
            bad = [b for b in src if b['scrolls'] and b['longest'] <= CODE_FITS]
            n_scroll = sum(b['scrolls'] for b in src)
            totals['code'] += len(src); totals['code_scroll'] += n_scroll
            totals['out'] += len(out); totals['out_scroll'] += sum(b['scrolls'] for b in out)
            totals['fits'] += [b['fits'] for b in src]
            fits = min((b['fits'] for b in src), default=0)
            check(not bad, f"{name}: code lines of <= {CODE_FITS} characters show whole: {len(src)} code cells, "
                           f"{n_scroll} scroll ({n_scroll / max(len(src), 1):.0%}: lines longer than the column), the column shows {fits} characters"
                  + (f" — scroll with short lines: {[(b['head'], b['longest'], b['fits']) for b in bad[:3]]}" if bad else ''))
            if a.screenshots:
                a.screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.screenshots/(name[:-len('.html')].replace('/', '_') + '.png')), full_page=a.full)

        # Links into the book: relative ones (served from `base`) and absolute ones to the book's own address,
        # which are mapped onto the local site. The target file must exist and hold the anchor; redirects are followed.
        ids_of = {n: set(f['ids']) for n, f in facts.items()}

        def resolve(path: str, frag: str, hops: int = 0) -> str | None:
            "None if `path#frag` (relative to the site root) resolves, else why not."
            path = path or 'index.html'
            if path.endswith('/'): path += 'index.html'
            target = a.site/path
            if not target.is_file(): return 'no such file'
            if not path.endswith('.html'): return None
            to = redirect_target(target.read_text(errors='replace'))
            if to and hops < 3:
                return resolve(urlparse(urljoin('/' + path, to)).path.lstrip('/'), frag, hops + 1)
            if not frag: return None
            if path not in ids_of:
                ids_of[path] = set(visit(path)['ids'])
            return None if unquote(frag) in ids_of[path] else f'no #{unquote(frag)} on {path}'

        n_links = n_abs = 0
        for name, f in facts.items():
            bad, n_in, n_own = [], 0, 0
            for href in f['links']:
                url, frag = urldefrag(href)
                if href.startswith(base): path = urlparse(url).path.lstrip('/'); n_in += 1
                elif href.startswith(site_url) or url == site_url.rstrip('/'): path = url[len(site_url):]; n_own += 1
                else: continue
                why = resolve(unquote(path), frag)
                if why: bad.append(f'{href.replace(base, "")} ({why})')
            n_links += n_in + n_own; n_abs += n_own
            check(not bad, f"{name}: links into the book resolve ({n_in} relative, {n_own} to {site_url})"
                  + (f" — broken: {bad[:5]} ({len(bad)} in all)" if bad else ''))

        # nbdev's own symbol URLs (sd_book/_modidx.py, which other nbdev projects link to) name pages without the
        # chapter number: each must reach a page (the site has a redirect page under each such name).
        modidx = runpy.run_path(str(Path(__file__).parents[1]/'sd_book'/'_modidx.py'))['d']
        urls = [u for syms in modidx['syms'].values() for u, _ in syms.values()]
        no_page = [u for u in urls if resolve(urldefrag(u)[0], '')]
        own_entry = sum(resolve(*urldefrag(u)) is None for u in urls)
        check(not no_page, f"sd_book/_modidx.py: {len(urls)} nbdev symbol URLs reach a page ({own_entry} their own doc entry; "
                           f"the rest are private or undocumented members)" + (f" — no page: {no_page[:5]}" if no_page else ''))
        browser.close()

    fits = sorted(totals['fits'])
    print(f"links into the book: {n_links} checked on {len(facts)} pages ({n_abs} absolute to {site_url})")
    print(f"display equations: {totals['eq']}, {totals['eq_scroll']} scroll in their own box at {a.width} px")
    print(f"code cells: {totals['code']}, {totals['code_scroll']} scroll ({totals['code_scroll'] / max(totals['code'], 1):.0%}); "
          f"the code column shows {fits[0] if fits else 0}-{fits[-1] if fits else 0} characters; "
          f"other blocks (outputs, code in prose): {totals['out']}, {totals['out_scroll']} scroll")
    n_ok = sum(results)
    print(f'site: {n_ok} passed, {len(results) - n_ok} failed')
    sys.exit(0 if all(results) else 1)


if __name__ == '__main__':
    main()
