"""`kubectl gentask …` (the `kubectl-gentask` plugin): GenerationTasks with the caller's kubeconfig and RBAC.

    kubectl gentask create image "a red fox" --provider fake --model fake-image --param size=512x512 --wait
    kubectl gentask get [NAME]        kubectl gentask describe NAME     kubectl gentask logs NAME [-f]
    kubectl gentask cancel NAME       kubectl gentask open NAME   (the task's page in the web console)

It talks to the API server as kubectl does (--kubeconfig, --context, -n; else KUBECONFIG or
~/.kube/config and the context's namespace), so it can do what the caller's RBAC allows and no
more. Exit codes as `gentask task` (gentask.cli.task.EXIT_CODES): 0 done, 1 the followed task
failed, 2 usage, 3 cancelled, 4 the cluster cannot be reached, 5 the API server refused
(forbidden, not found, invalid), 6 --timeout ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from pydantic import ValidationError

from gentask.cli.task import (
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    Progress,
    age,
    printable,
    text_table,
)
from gentask.domain.names import to_camel
from gentask.domain.task import GROUP, VERSION, GenerationTaskSpec
from gentask.kube.client import KubeClient, object_path, task_path
from gentask.kube.config import ConfigError, from_kubeconfig, load_connection
from gentask.kube.errors import ClusterUnavailable, KubeError
from gentask.kube.names import LABEL_TASK
from gentask.kube.tasks import random_name

PHASE_WORD = {"Succeeded": "completed", "Failed": "failed", "Cancelled": "cancelled"}
OUTCOME = {"Succeeded": EXIT_OK, "Failed": EXIT_FAILED, "Cancelled": EXIT_CANCELLED}
POLL = 1.0


def _connect(args: argparse.Namespace) -> KubeClient:
    try:
        if args.context:
            listed = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            path = args.kubeconfig or listed or str(Path.home() / ".kube" / "config")
            connection = from_kubeconfig(path, args.context)
        else:
            connection = load_connection(args.kubeconfig)
    except ConfigError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from exc
    if not args.namespace:
        args.namespace = connection.namespace or "default"
    return KubeClient(connection, timeout=args.request_timeout)


def _kube_error(exc: KubeError) -> CliError:
    if isinstance(exc, ClusterUnavailable) or exc.unavailable:
        return CliError(EXIT_UNREACHABLE, f"cannot reach the cluster: {exc}")
    return CliError(EXIT_REFUSED, f"the API server answered {exc.status}: {exc.message or exc.reason}")


def _dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=2, ensure_ascii=False)
    import yaml
    return str(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)).rstrip()


def _view(task: Mapping[str, Any]) -> dict[str, Any]:
    """What the progress display reads, from a resource."""
    status = task.get("status") or {}
    phase = status.get("phase") or "Pending"
    return {"task_id": task["metadata"]["name"], "phase": phase, "message": status.get("message"),
            "status": PHASE_WORD.get(phase, "pending")}


# --- the commands ---------------------------------------------------------------------------------


async def cmd_create(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Make a GenerationTask from the flags (checked against the resource's schema first); --wait follows it."""
    params: dict[str, Any] = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(EXIT_USAGE, f"--param takes NAME=VALUE (e.g. --param size=512x512), got {item!r}")
        try:
            params[to_camel(key.replace("-", "_"))] = json.loads(value)
        except ValueError:
            params[to_camel(key.replace("-", "_"))] = value
    spec: dict[str, Any] = {"type": args.type, "provider": args.provider, "model": args.model,
                            "prompt": args.prompt, "params": params}
    for flag, field in (("user_id", "userID"), ("priority", "priority"), ("timeout_seconds", "timeoutSeconds"),
                        ("retries", "retries")):
        if getattr(args, flag) is not None:
            spec[field] = getattr(args, flag)
    try:
        GenerationTaskSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CliError(EXIT_USAGE, f"the task would be refused: {problems}") from None
    name = args.name or random_name(args.type)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": name},
            "spec": spec}
    try:
        made = await kube.create_task(args.namespace, body)
    except KubeError as exc:
        raise _kube_error(exc) from exc
    err.write(f"generationtask.{GROUP}/{name} created in {args.namespace}\n")
    if not args.wait:
        out.write((name if args.output == "name" else _dump(made, args.output) if args.output != "table"
                   else _get_table([made])) + "\n")
        return EXIT_OK
    return await _follow(kube, args, name, out, err)


async def _follow(kube: KubeClient, args: argparse.Namespace, name: str, out: IO[str], err: IO[str]) -> int:
    progress = Progress(err, live=err.isatty() and os.environ.get("TERM") != "dumb")
    start, last, task = time.monotonic(), None, {}
    try:
        while True:
            task = await _get(kube, args.namespace, name)
            view = _view(task)
            if (view["phase"], view["message"]) != last:
                last = (view["phase"], view["message"])
                progress.show(view)
            if view["phase"] in OUTCOME:
                break
            if args.timeout is not None and time.monotonic() - start >= args.timeout:
                raise CliError(EXIT_TIMEOUT, f"{name} is still {view['phase']} after {args.timeout:g} s (--timeout); "
                                             "it goes on")
            await asyncio.sleep(POLL)
    finally:
        progress.close()
    out.write((_dump(task, args.output) if args.output in ("json", "yaml") else _get_table([task])) + "\n")
    return OUTCOME[str((task.get("status") or {}).get("phase"))]


async def _get(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        return await kube.get_task(namespace, name)
    except KubeError as exc:
        if exc.not_found:
            raise CliError(EXIT_REFUSED, f"no GenerationTask {name!r} in namespace {namespace} "
                                         f"(`kubectl gentask get -n {namespace}` lists them)") from exc
        raise _kube_error(exc) from exc


def _get_table(tasks: Sequence[Mapping[str, Any]]) -> str:
    rows = [["NAME", "TYPE", "PROVIDER", "MODEL", "PHASE", "REASON", "ATTEMPTS", "AGE"]]
    for t in tasks:
        spec, status = t.get("spec") or {}, t.get("status") or {}
        rows.append([str(t["metadata"]["name"]), str(spec.get("type")), str(spec.get("provider")),
                     str(spec.get("model")), str(status.get("phase") or "Pending"), str(status.get("reason") or ""),
                     str(status.get("attempts") or 0), age(t["metadata"].get("creationTimestamp"))])
    return text_table([[printable(c) for c in row] for row in rows])


async def cmd_get(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """One task, or the namespace's tasks."""
    if args.task:
        tasks = [await _get(kube, args.namespace, args.task)]
    else:
        try:
            tasks, _ = await kube.list_tasks(args.namespace)
        except KubeError as exc:
            raise _kube_error(exc) from exc
        if not tasks and args.output == "table":
            err.write(f"No GenerationTasks in namespace {args.namespace}.\n")
            return EXIT_OK
    if args.output in ("json", "yaml"):
        out.write(_dump(tasks[0] if args.task else {"items": tasks}, args.output) + "\n")
    else:
        out.write(_get_table(tasks) + "\n")
    return EXIT_OK


async def cmd_describe(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """The task's spec and status, its conditions, its Events, and the Job and pods that ran it."""
    task = await _get(kube, args.namespace, args.task)
    meta, spec, status = task["metadata"], task.get("spec") or {}, task.get("status") or {}
    lines = [f"Name:        {meta['name']}", f"Namespace:   {meta['namespace']}",
             f"Created:     {meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'))} ago)",
             f"Type:        {spec.get('type')}", f"Model:       {spec.get('provider')}/{spec.get('model')}",
             f"User:        {spec.get('userID') or '-'}", f"Priority:    {spec.get('priority', 'default')}",
             f"Prompt:      {spec.get('prompt')}", f"Params:      {json.dumps(spec.get('params') or {})}",
             f"Phase:       {status.get('phase') or 'Pending'}", f"Reason:      {status.get('reason') or '-'}",
             f"Message:     {status.get('message') or '-'}", f"Attempts:    {status.get('attempts') or 0}"]
    served = status.get("servedBy") or {}
    if served:
        lines.append(f"Served by:   {served.get('provider')}/{served.get('model')}")
    cost = status.get("cost") or {}
    if cost:                   # each currency's total, then each vendor attempt (docs/pricing.md)
        totals = " + ".join(f"{t.get('amount')} {t.get('currency')}" for t in cost.get("totals") or [])
        lines.append(f"Cost:        {totals or '-'}")
        lines += [f"  {a.get('provider')}/{a.get('model')} {a.get('outcome')}"
                  f"{' (' + str(a['reason']) + ')' if a.get('reason') else ''}: {a.get('amount')} {a.get('currency')}"
                  f" {json.dumps(a.get('usage') or {})}" for a in cost.get("attempts") or []]
    lines.append(f"Job:         {status.get('jobName') or '-'}")
    lines.append(f"Worker pod:  {status.get('workerPod') or '-'}")
    conditions = status.get("conditions") or []
    lines.append("Conditions:")
    if conditions:
        lines += ["  " + line for line in text_table([["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]] + [
            [str(c.get("type")), str(c.get("status")), str(c.get("reason")), age(c.get("lastTransitionTime")),
             str(c.get("message") or "")] for c in conditions]).splitlines()]
    else:
        lines.append("  <none>")
    try:
        events = (await kube.request("GET", object_path("Event", args.namespace), params={
            "fieldSelector": f"involvedObject.uid={meta.get('uid')}"})).get("items") or []
        job = status.get("jobName")
        pods = (await kube.request("GET", object_path("Pod", args.namespace), params={
            "labelSelector": f"{LABEL_TASK}={meta['name']}"})).get("items") or [] if job else []
    except KubeError as exc:
        raise _kube_error(exc) from exc
    lines.append("Pods:")
    if pods:
        lines += ["  " + line for line in text_table([["NAME", "PHASE", "NODE", "AGE"]] + [
            [p["metadata"]["name"], str((p.get("status") or {}).get("phase")),
             str((p.get("spec") or {}).get("nodeName") or "-"), age(p["metadata"].get("creationTimestamp"))]
            for p in pods]).splitlines()]
    else:
        lines.append("  <none>" + ("" if status.get("jobName") else " (the task ran without a Job of its own: "
                                                                   "inline or pool executor)"))
    lines.append("Events:")
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    if events:
        lines += ["  " + line for line in text_table([["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]] + [
            [str(e.get("type")), str(e.get("reason")), age(e.get("lastTimestamp") or e.get("eventTime")),
             str((e.get("source") or {}).get("component") or e.get("reportingComponent") or ""),
             str(e.get("message") or "")] for e in events]).splitlines()]
    else:
        lines.append("  <none>")
    out.write("\n".join(printable(line) for line in lines) + "\n")
    return EXIT_OK


async def cmd_logs(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """The log of the pod that ran (or runs) the task's latest attempt."""
    task = await _get(kube, args.namespace, args.task)
    status = task.get("status") or {}
    pod = status.get("workerPod")
    if not pod:
        try:
            pods = (await kube.request("GET", object_path("Pod", args.namespace), params={
                "labelSelector": f"{LABEL_TASK}={args.task}"})).get("items") or []
        except KubeError as exc:
            raise _kube_error(exc) from exc
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        pod = pods[-1]["metadata"]["name"] if pods else None
    if not pod:
        why = ("it has not started yet" if (status.get("phase") or "Pending") in ("Pending", "Queued")
               else "it ran inside the operator (inline executor): see the operator's log")
        raise CliError(EXIT_REFUSED, f"task {args.task} has no worker pod: {why}")
    params = {"follow": "true"} if args.follow else {}
    if args.tail is not None:
        params["tailLines"] = str(args.tail)
    path = object_path("Pod", args.namespace, pod) + "/log"
    try:
        if args.follow:
            async for chunk in kube.text_stream(path, params):
                out.write(chunk.decode("utf-8", errors="replace"))
                out.flush()
        else:
            out.write(await kube.text(path, params))
    except KubeError as exc:
        if exc.not_found:
            raise CliError(EXIT_REFUSED, f"the worker pod {pod} of task {args.task} is gone (its Job was "
                                         "cleaned up); the task's status and Events remain: "
                                         f"`kubectl gentask describe {args.task}`") from exc
        raise _kube_error(exc) from exc
    return EXIT_OK


async def cmd_cancel(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Set spec.cancel: the operator stops the task."""
    task = await _get(kube, args.namespace, args.task)
    phase = (task.get("status") or {}).get("phase") or "Pending"
    if phase in OUTCOME:
        raise CliError(EXIT_REFUSED, f"task {args.task} has already finished ({phase}); nothing to cancel")
    try:
        await kube.request("PATCH", task_path(args.namespace, args.task), body={"spec": {"cancel": True}},
                           content_type="application/merge-patch+json")
    except KubeError as exc:
        raise _kube_error(exc) from exc
    out.write(f"generationtask.{GROUP}/{args.task} cancel requested\n")
    return EXIT_OK


async def cmd_open(kube: KubeClient, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print the console's page of the task (the task must exist; the console needs the owner's API key)."""
    task = await _get(kube, args.namespace, args.task)
    base = (args.url or "").rstrip("/")
    if not base:
        raise CliError(EXIT_USAGE, "where is the console? give the API's URL: --url https://gentask.example.com, "
                                   "or GENTASK_URL")
    out.write(f"{base}/console/#/task/{quote(task['metadata']['name'], safe='')}\n")
    return EXIT_OK


COMMANDS = {"create": cmd_create, "get": cmd_get, "describe": cmd_describe, "logs": cmd_logs, "cancel": cmd_cancel,
            "open": cmd_open}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise CliError(EXIT_USAGE, f"{self.prog}: {message}\n(see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    """The command line of `kubectl gentask`."""
    epilog = "exit codes:\n" + "\n".join(f"  {code}  {text.replace('API', 'API server')}"
                                         for code, text in EXIT_CODES.items() if code != 7)
    top = _Parser(prog="kubectl gentask", description="GenerationTasks with your kubeconfig and RBAC.",
                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _Parser(add_help=False)
    common.add_argument("-n", "--namespace", help="default: the context's namespace, else default")
    common.add_argument("--kubeconfig", help="default: KUBECONFIG, else ~/.kube/config, else in-cluster")
    common.add_argument("--context")
    common.add_argument("--request-timeout", type=float, default=30.0, help="seconds for one request")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    create = sub.add_parser("create", parents=[common], help="make a GenerationTask (--wait: follow it)")
    create.add_argument("type", choices=("image", "video", "text"))
    create.add_argument("prompt")
    create.add_argument("--provider", required=True)
    create.add_argument("--model", required=True)
    create.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="spec.params, e.g. --param size=512x512 --param max_tokens=100; repeatable")
    create.add_argument("--user-id")
    create.add_argument("--priority", choices=("critical", "default", "low"))
    create.add_argument("--timeout-seconds", type=int)
    create.add_argument("--retries", type=int)
    create.add_argument("--name", help="default: a random name by type (img-…, vid-…, txt-…)")
    create.add_argument("--wait", action="store_true", help="follow the task until it ends; exit by its outcome")
    create.add_argument("--timeout", type=float, help="with --wait: give up following after this many seconds")
    create.add_argument("-o", "--output", choices=("table", "name", "json", "yaml"), default="table")
    get = sub.add_parser("get", parents=[common], help="a task, or the namespace's tasks")
    get.add_argument("task", nargs="?")
    get.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    for name, text in (("describe", "status, conditions, Events, the Job and its pods"),
                       ("logs", "the log of the task's worker pod"), ("cancel", "cancel a task that has not finished"),
                       ("open", "print the link to the task's page in the web console")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("task")
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true")
            p.add_argument("--tail", type=int, help="the last N lines only")
        if name == "open":
            p.add_argument("--url", default=os.environ.get("GENTASK_URL"),
                           help="the API's public URL, where the console is (GENTASK_URL)")
    return top


def main(argv: list[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run `kubectl gentask ARGS`; returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except CliError as exc:
        err.write(f"{exc}\n")
        return exc.code
    except SystemExit as exc:              # --help
        return int(exc.code or 0)

    async def run() -> int:
        kube = _connect(args)
        try:
            return await COMMANDS[args.command](kube, args, out, err)
        finally:
            await kube.close()
    try:
        return asyncio.run(run())
    except CliError as exc:
        err.write(f"kubectl gentask {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return 130
