"""Run inside Blender (`blender -b --factory-startup --python THIS -- IN.bvh OUT.json`): import a BVH
with Blender's own importer (file axes kept: Y up read as Blender's Z up) and write every pose
bone's head in world space per frame, with the bone names."""
import builtins
import json
import sys

import bpy

# Debian bookworm's Blender 3.4 BVH importer opens files with mode "rU", which Python 3.11 removed.
_open = builtins.open
builtins.open = lambda file, mode="r", *args, **kwargs: _open(file, mode.replace("U", ""), *args, **kwargs)

bvh, out = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh, axis_forward="-Z", axis_up="Y", update_scene_fps=True, update_scene_duration=True)
scene = bpy.context.scene
armature = next(obj for obj in scene.objects if obj.type == "ARMATURE")
first, last = (int(round(f)) for f in armature.animation_data.action.frame_range)
names = [bone.name for bone in armature.pose.bones]
heads = []
for frame in range(first, last + 1):
    scene.frame_set(frame)
    heads.append([list(armature.matrix_world @ armature.pose.bones[name].head) for name in names])
with open(out, "w") as handle:
    json.dump({"names": names, "heads": heads}, handle)
