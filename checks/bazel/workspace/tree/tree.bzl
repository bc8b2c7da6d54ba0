"""Rules whose outputs stress remote execution: a tree artifact, and one
action with a thousand outputs that another action takes as inputs."""

def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [out],
        command = ("mkdir -p {d}/sub/subsub && echo top > {d}/top.txt && " +
                   "echo mid > {d}/sub/mid.txt && echo leaf > {d}/sub/subsub/leaf.txt && " +
                   "printf '#!/bin/sh\\necho in-tree\\n' > {d}/sub/run.sh && chmod +x {d}/sub/run.sh").format(d = out.path),
        mnemonic = "MakeTree",
    )
    return [DefaultInfo(files = depset([out]))]

tree_artifact = rule(implementation = _tree_impl)

def _many_impl(ctx):
    outs = [ctx.actions.declare_file("%s/f%d.txt" % (ctx.label.name, 10000 + i)) for i in range(ctx.attr.count)]
    ctx.actions.run_shell(
        outputs = outs,
        command = "for f in \"$@\"; do echo \"$f\" > \"$f\"; done",
        arguments = [o.path for o in outs],
        mnemonic = "ManyFiles",
    )
    return [DefaultInfo(files = depset(outs))]

many_files = rule(
    implementation = _many_impl,
    attrs = {"count": attr.int(mandatory = True)},
)
