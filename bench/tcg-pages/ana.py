#!/usr/bin/env python3
"""Summarises pages.c's episodes (see README.md).

usage: ana.py EPISODES SYSTEM_MAP CONSOLE_LOG [KIND [insns]]

Groups the episodes by the named functions they ran (the TCE handlers of both paths) and prints, per group,
the medians of: blocks run, distinct blocks, code pages, data pages, instructions, lookups, distinct lookups.
With KIND (a group's label as printed, e.g. "pvtce mm_iommu_mapped_inc") it lists the median episode's code
pages with their functions and its data pages with the instruction that touched each first; with "insns"
after it, the instructions per function instead. Kernel symbols come from SYSTEM_MAP, module symbols from the
KSYM lines of CONSOLE_LOG (`pvtce_probe=ksyms=1`).
"""
import bisect
import collections
import sys

MARKS = ['kvmppc_h_put_tce', 'kvmppc_h_get_tce', 'kvmppc_h_stuff_tce', 'kvmppc_h_put_tce_indirect',
         'mm_iommu_mapped_inc', 'mm_iommu_mapped_dec', 'kvmppc_tce_early', 'kvmppc_pseries_do_hcall',
         'kvm_vcpu_ioctl']


def load_symbols(system_map, console):
    syms = []
    for line in open(system_map):
        f = line.split()
        if len(f) >= 3 and f[1] in 'tTwW':
            syms.append((int(f[0], 16), f[2]))
    for line in open(console, errors='replace'):
        f = line.split()
        if len(f) >= 5 and f[0] == 'KSYM' and f[2] in 'tTwW':
            syms.append((int(f[1], 16), f[3] + f[4]))
    syms = sorted(set(syms))
    return [a for a, _ in syms], syms


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    addrs, syms = load_symbols(sys.argv[2], sys.argv[3])

    def sym(pc):
        i = bisect.bisect_right(addrs, pc) - 1
        return '%s+%x' % (syms[i][1], pc - syms[i][0]) if i >= 0 else hex(pc)

    def func(pc):
        return sym(pc).split('+')[0]

    def region(p):
        return ('vmemmap' if p >= 0xc00c000000000000 else 'io' if p >= 0xc00a000000000000 else
                'vmalloc' if p >= 0xc008000000000000 else 'linear')

    eps = []
    lines = open(sys.argv[1]).read().split('\n')
    i = 0
    while i + 3 < len(lines):
        if not lines[i].startswith('E '):
            i += 1
            continue
        f = lines[i].split()
        tt = [[int(y, 16) for y in x.split(':')] for x in lines[i + 3].split()[1:]]
        eps.append(dict(ntb=int(f[2]), ndt=int(f[3]), nc=int(f[4]), nd=int(f[5]), ins=int(f[7]), lk=int(f[8]),
                        dlk=int(f[9]), C=[int(x, 16) for x in lines[i + 1].split()[1:]],
                        D=[tuple(int(y, 16) for y in x.split(':')) for x in lines[i + 2].split()[1:]], TT=tt))
        i += 4

    def kind(e):
        names = set(func(t[0]) for t in e['TT'])
        bare = set(n.split('[')[0] for n in names)
        k = ['pvtce'] if any(n.endswith('[pvtce]') for n in names) else []
        return ' '.join(k + [m for m in MARKS if m in bare])

    groups = collections.defaultdict(list)
    for e in eps:
        groups[kind(e)].append(e)
    if len(sys.argv) < 5:
        print('episodes  blocks distinct code data insns lookups distinct  [functions]')
        for k, g in sorted(groups.items(), key=lambda x: -len(x[1])):
            med = lambda key: sorted(e[key] for e in g)[len(g) // 2]
            print('%8d %7d %8d %4d %4d %5d %7d %8d  [%s]' % (len(g), med('ntb'), med('ndt'), med('nc'), med('nd'),
                                                            med('ins'), med('lk'), med('dlk'), k))
        return
    g = groups.get(sys.argv[4], [])
    if not g:
        sys.exit('no episode of kind %r' % sys.argv[4])
    e = sorted(g, key=lambda e: e['ins'])[len(g) // 2]
    if len(sys.argv) > 5 and sys.argv[5] == 'insns':
        ins, blocks = collections.Counter(), collections.Counter()
        for pc, n, runs in e['TT']:
            ins[func(pc)] += n * runs
            blocks[func(pc)] += 1
        print('%d episodes; the median one ran %d instructions' % (len(g), e['ins']))
        for name, n in ins.most_common():
            print('%6d %4d %s' % (n, blocks[name], name))
        return
    pages = collections.OrderedDict()
    for pc, _, _ in e['TT']:
        pages.setdefault(pc & ~0xfff, []).append(func(pc))
    print('%d episodes; the median one: %d code pages' % (len(g), e['nc']))
    for p, names in pages.items():
        print('  C %x %s' % (p, ', '.join(dict.fromkeys(names))))
    print('%d data pages' % e['nd'])
    for p, pc in e['D']:
        print('  D %-8s %x  first by %s' % (region(p), p, sym(pc)))


main()
